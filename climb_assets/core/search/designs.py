"""Candidate designs that reach what prior-shaped Dirichlet draws never do.

Iteration 1's `cover_design` adds each group at its cap (`vertex_mixtures`) and mixtures on 2-3
groups (`sparse_mixtures`) to the RegMix draws. Later iterations add the feasible set's vertices
(`corner_mixtures`: groups filled to their caps in a ranked order, and its neighbours by
`swapped_orders`), where a score that keeps rising with a group's weight has its best mixture.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from climb_assets.core.search.mixtures import (
    MAX_BATCHES,
    MixtureConstraints,
    Seed,
    enforce_constraints,
    greedy_fill,
    mixture_keys,
    sample_dirichlet,
    stack_rows,
    take_new,
    unique_rows,
)

# Iteration 1's cover design: vertices first, then this share of the rest as sparse mixtures.
COVER_SPARSE_SHARE = 0.5
COVER_SPARSE_SUPPORT = (2, 3)


def vertex_mixtures(constraints: MixtureConstraints) -> np.ndarray:
    """One mixture per usable group: that group at its cap, the rest spread by the prior.

    A small, pure group is never drawn at high weight around the prior; its vertex is the only
    way the predictor learns what it is worth. Rows are in group order.
    """
    rows = []
    for group in np.flatnonzero((constraints.upper > 0) & (constraints.prior > 0)):
        rest = np.where(np.arange(constraints.k) == group, 0.0, constraints.prior)
        cap = constraints.upper[group]
        row = rest / rest.sum() * (1 - cap) if rest.sum() > 0 else rest
        row[group] = cap
        rows.append(row)
    return enforce_constraints(stack_rows(rows, constraints.k), constraints)


def sparse_mixtures(
    constraints: MixtureConstraints, n: int, seed: Seed, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Up to `n` distinct mixtures on 2-3 random groups (flat Dirichlet), projected on the caps:
    the simplex's edges and faces, which prior-shaped draws almost never reach."""
    rng = np.random.default_rng(seed)
    active = np.flatnonzero((constraints.upper > 0) & (constraints.prior > 0))
    seen = set(mixture_keys(exclude)) if exclude is not None else set()
    accepted: list[np.ndarray] = []
    low, high = COVER_SPARSE_SUPPORT
    for _ in range(MAX_BATCHES):
        wanted = n - len(accepted)
        if wanted <= 0 or len(active) < 2:
            break
        batch = np.zeros((wanted + 8, constraints.k))
        for row in batch:
            size = int(rng.integers(low, min(high, len(active)) + 1))
            support = rng.choice(active, size, replace=False)
            row[support] = rng.dirichlet(np.ones(size))
        accepted.extend(take_new(enforce_constraints(batch, constraints), seen, wanted))
    return stack_rows(accepted, constraints.k)


def cover_design(
    constraints: MixtureConstraints, n: int, seed: Seed, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Iteration 1 candidates that cover the simplex, and their kind per row.

    Every group's vertex (a seeded subset when n is smaller than the number of groups), then
    sparse mixtures, then RegMix Dirichlet draws of 15 concentrations around the prior.
    """
    rng = np.random.default_rng(seed)
    seen = set(mixture_keys(exclude)) if exclude is not None else set()
    vertices = vertex_mixtures(constraints)
    if len(vertices) > n:
        vertices = vertices[np.sort(rng.choice(len(vertices), n, replace=False))]
    vertices = stack_rows(take_new(vertices, seen, n), constraints.k)
    n_sparse = round((n - len(vertices)) * COVER_SPARSE_SHARE)
    blocked = _combine(exclude, vertices)
    sparse = sparse_mixtures(constraints, n_sparse, rng, exclude=blocked)
    blocked = _combine(blocked, sparse)
    draws = sample_dirichlet(constraints, n - len(vertices) - len(sparse), rng, exclude=blocked)
    weights = np.vstack([vertices, sparse, draws])
    kinds = ["vertex"] * len(vertices) + ["sparse"] * len(sparse) + ["dirichlet"] * len(draws)
    return weights, kinds


def corner_mixtures(constraints: MixtureConstraints, orders: Iterable[Sequence[int]]) -> np.ndarray:
    """Distinct vertices of the feasible set: groups filled to their caps in each given order
    (groups an order leaves out follow by descending prior)."""
    by_prior = sorted(range(constraints.k), key=lambda g: (-constraints.prior[g], g))
    rows = []
    for order in orders:
        head = [int(g) for g in order]
        full = head + [g for g in by_prior if g not in set(head)]
        rows.append(greedy_fill(full, constraints.upper))
    return unique_rows(enforce_constraints(stack_rows(rows, constraints.k), constraints))


def swapped_orders(order: Sequence[int], depth: int) -> list[list[int]]:
    """`order`, then each variant with one pair among its first `depth` positions swapped:
    the vertices next to the corner `order` fills."""
    order = list(order)
    variants = [order]
    for i in range(min(depth, len(order))):
        for j in range(i + 1, min(depth, len(order))):
            swapped = order.copy()
            swapped[i], swapped[j] = swapped[j], swapped[i]
            variants.append(swapped)
    return variants


def _combine(first: np.ndarray | None, second: np.ndarray | None) -> np.ndarray | None:
    parts = [part for part in (first, second) if part is not None and len(part)]
    return np.vstack(parts) if parts else None
