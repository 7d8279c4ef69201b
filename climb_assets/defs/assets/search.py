"""Search stage: proxy pool -> bootstrap iterations (candidates, proxy scores, predictor) ->
optimal mixture.

Dagster forbids cycles between asset keys, and a multi-asset whose outputs depend on earlier
partitions of each other cannot be backfilled. So one self-dependent
asset, `bootstrap_iteration`, runs a whole CLIMB round (propose, train proxies, score, fit the
predictor) and depends on its previous partition; backfilling it runs the rounds in order. The
round's three artifacts are then published as their own partitioned assets, with checks
(`defs/iteration_views.py`); `optimal_mixture` races its finalists through `defs/final_race.py`.
"""

import shutil
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import polars as pl

from climb_assets.core.clustering.naming import round_for_reading
from climb_assets.core.search.mixtures import constraint_budget, pool_token_limit
from climb_assets.core.search.proxy_jobs import (
    ProxyTrainer,
    proxy_run_key,
    with_absolute_target_paths,
)
from climb_assets.core.shared.atomic import atomic_dir, write_json, write_parquet
from climb_assets.core.shared.execution import ExecutionError
from climb_assets.core.shared.identity import (
    SEARCH_ID,
    SUPER_CLUSTERS_ID,
    StaleInput,
    check_iterations,
    current_super_clusters_id,
    read_optimal,
    search_id,
)
from climb_assets.defs.failures import one_line_failures
from climb_assets.defs.final_race import (
    final_race,
    noise_table,
    race_metadata,
    search_seed_noise,
)
from climb_assets.defs.iteration_views import build_publishing_assets
from climb_assets.defs.metadata import (
    iteration_numbers,
    named,
    or_na,
    per_iteration,
    plot,
    report_metadata,
    rounded,
    runs_table,
    super_cluster_names_of,
    table,
)
from climb_assets.defs.partitions import PREVIOUS_ITERATION, iterations_partitions
from climb_assets.defs.report import write_report
from climb_assets.defs.resources import ClimbSettings
from climb_assets.defs.shard_state import map_shards, registered, require_shard_files
from climb_assets.settings import Settings
from climb_assets.store import (
    CURVES_FILE,
    PREDICTOR_DIR,
    READ_PER_SHARD,
    REPEATS_FILE,
    RUNS_FILE,
    SUMMARY_FILE,
    Layout,
    corpus_token_counts,
    iteration_key,
    iteration_number,
    iteration_runs,
    kept_document_batches,
    read_summary,
)

if TYPE_CHECKING:
    from climb_assets.core.search.pool_writer import DocBatch


@dg.asset(
    deps=["super_clusters", "cluster_assignments", "document_index"],
    group_name="search",
    kinds={"numpy"},
    code_version="2",
    description="Every super-cluster's text (a seeded sample of its documents where it holds "
    "more than proxy.pool_coverage times what one model draws) tokenized once with a BPE "
    "trained on the corpus, as memory-mapped uint16 arrays, so drawing a mixture's training "
    "stream is fast.",
)
@one_line_failures
def proxy_pool(context: dg.AssetExecutionContext, climb: ClimbSettings) -> dg.MaterializeResult:
    from climb_assets.core.search.pool_writer import keep_fractions, write_pool_in_parts
    from climb_assets.core.search.tokenizer import train_bpe

    settings, layout = climb.resolve()
    shards = registered(context.instance)
    require_shard_files(layout, shards, "proxy_pool", *READ_PER_SHARD)
    layout = Layout(layout.root.resolve())  # a Ray worker's working directory is another
    batch_docs = settings.execution.batch_docs

    # Two passes over the text, holding a batch at a time: the BPE first, here, then the pool
    # with it, one task per shard, concatenated in the stream's shard order.
    texts = kept_document_batches(layout, shards, ["text"], batch_docs, kept_super_clusters=True)
    tokenizer = train_bpe(
        (text for frame in texts for text in frame["text"]),
        settings.proxy.vocab_size,
        max_docs=settings.proxy.tokenizer_sample_docs,
        seed=settings.seed,
    )
    stats = write_pool_in_parts(
        [partial(pool_batches, layout, shard, batch_docs) for shard in sorted(shards)],
        tokenizer,
        layout.proxy_pool,
        keep_fractions(_super_cluster_tokens(layout), pool_token_limit(settings)),
        seed=settings.seed,
        run_parts=lambda fn, parts: map_shards(fn, parts, settings, layout, "proxy_pool"),
    )
    by_group = pl.DataFrame(
        [
            {
                "super_cluster": g,
                "tokens": s.tokens,
                "docs": s.docs,
                "text_bytes": s.text_bytes,
                "kept_fraction": round_for_reading(s.kept_fraction),
            }
            for g, s in sorted(stats.items())
        ]
    )
    return dg.MaterializeResult(
        metadata={
            "vocab_size": tokenizer.get_vocab_size(),
            "tokens": int(by_group["tokens"].sum()),
            "super_clusters": by_group.height,
            "by_super_cluster": table(
                named(by_group, super_cluster_names_of(layout.super_clusters))
            ),
        }
    )


def pool_batches(layout: Layout, shard: str, batch_docs: int) -> Iterator["DocBatch"]:
    """One shard's part of the pool's stream: its documents of kept super-clusters."""
    from climb_assets.core.search.pool_writer import DocBatch

    columns = ["doc_id", "text"]
    for frame in kept_document_batches(
        layout, [shard], columns, batch_docs, kept_super_clusters=True
    ):
        yield DocBatch(*(frame[c].to_list() for c in ("super_cluster", "doc_id", "text")))


def _super_cluster_tokens(layout: Layout) -> dict[int, int]:
    """Every super-cluster's corpus tokens: the pool's groups and what each can supply."""
    supers = pl.read_parquet(layout.super_clusters, columns=["super_cluster", "n_tokens"])
    return dict(zip(supers["super_cluster"].to_list(), supers["n_tokens"].to_list(), strict=True))


def build_search_assets(settings: Settings) -> list:
    """The partitioned search assets; the iteration count comes from the settings."""
    partitions = iterations_partitions(settings.iterations)

    @dg.asset(
        partitions_def=partitions,
        deps=[proxy_pool, dg.AssetDep("bootstrap_iteration", partition_mapping=PREVIOUS_ITERATION)],
        group_name="search",
        kinds={"pytorch", "lightgbm"},
        code_version="4",  # 4: summary.json records the super-clusters' identity
        pool="gpu",
        description="One CLIMB round: propose mixtures (round 1 covers the simplex: every "
        "super-cluster at its cap, sparse mixtures, Dirichlet draws; later rounds the previous "
        "predictor's best plus exploration), train a proxy LM on each with one shared seed, "
        "re-run a few with a second seed to measure the noise, score them on the targets, fit "
        "the LightGBM ensemble on all runs so far. Depends on the previous round; backfilling "
        "every partition runs the rounds in order.",
    )
    @one_line_failures
    def bootstrap_iteration(
        context: dg.AssetExecutionContext, climb: ClimbSettings
    ) -> dg.MaterializeResult:
        return run_iteration(context, *climb.resolve())

    return [bootstrap_iteration, *build_publishing_assets(partitions), optimal_mixture]


def run_iteration(
    context: dg.AssetExecutionContext, settings: Settings, layout: Layout
) -> dg.MaterializeResult:
    """Run the round in core on this partition's inputs, write its artifacts atomically and
    report it; the checkpoints of its proxies are removed once the artifacts are written."""
    from climb_assets.core.search.bootstrap import ProxiesFailed, run_round
    from climb_assets.core.shared.plots import objective_by_iteration

    key = context.partition_key
    iteration = iteration_number(key)
    history = iteration_runs(layout, iteration)
    clusters_id = checked_super_clusters(context, layout, f"bootstrap_iteration {key}", iteration)
    token_counts = corpus_token_counts(layout, settings)
    # Absolute paths: a Ray worker's working directory need not be this process's.
    trainer = ProxyTrainer(
        with_absolute_target_paths(settings),
        layout.proxy_pool.resolve(),
        layout.iteration_work(key).resolve(),
        proxy_run_key(settings, layout.proxy_pool),
    )
    try:
        result = run_round(
            iteration,
            history,
            token_counts,
            constraint_budget(settings),
            settings,
            trainer,
            log=context.log.info,
            warn=context.log.warning,
            label=key,
        )
    except (ExecutionError, ProxiesFailed) as err:
        raise dg.Failure(str(err)) from err
    scored, repeats = result.runs, result.repeats
    summary = {**result.summary, SUPER_CLUSTERS_ID: clusters_id}  # what the round was built on
    with atomic_dir(layout.iteration(key)) as tmp:
        write_parquet(scored, tmp / RUNS_FILE)
        write_parquet(repeats, tmp / REPEATS_FILE)
        write_parquet(result.curves, tmp / CURVES_FILE)
        result.fitted.predictor.save(tmp / PREDICTOR_DIR)
        write_json(summary, tmp / SUMMARY_FILE)
    shutil.rmtree(layout.iteration_work(key), ignore_errors=True)
    return dg.MaterializeResult(
        metadata={
            "proxies": scored.height,
            "best_objective": rounded(summary["best_score"]),
            **iteration_numbers(iteration, scored["score"], history),
            "cv_spearman": or_na(summary["cv_spearman"]),
            "seed_noise": or_na(summary["seed_noise"]),
            "predictor_spread": rounded(summary["predictor_spread"]),
            "stopped_at_rung": summary["stopped_at_rung"],
            "rung_spearman": or_na(summary["rung_spearman"]),
            SUPER_CLUSTERS_ID: clusters_id,
            "candidates": runs_table(scored.drop("iteration"), 64),
            # Drawn here because the Plots tab's Partitions mode stays empty for these
            # partitions (see the docs' UI notes): the rounds so far, one click away.
            "score_by_iteration": plot(
                objective_by_iteration(runs_so_far(history, scored)), "objective by iteration"
            ),
            "seed_repeats": table(repeats),
            "execution_backend": settings.execution.backend,
            "proxies_trained": len(result.trained),
            "worker_processes": len(result.workers),
            "workers": dg.MetadataValue.json(result.workers),
            # Ray node ids (none on the local backend): several nodes may share a hostname.
            "nodes": dg.MetadataValue.json(
                sorted({d["worker"]["node"] for d in result.trained if "node" in d["worker"]})
            ),
        }
    )


def runs_so_far(history: pl.DataFrame | None, scored: pl.DataFrame) -> pl.DataFrame:
    """The `iteration` and `score` of the earlier rounds' runs and this round's."""
    frames = [f.select("iteration", "score") for f in (history, scored) if f is not None]
    return pl.concat(frames, how="vertical_relaxed")


def checked_super_clusters(
    context: dg.AssetExecutionContext, layout: Layout, consumer: str, before: int
) -> str:
    """The current super-clusters' identity, once iterations 1..before-1 are found built on the
    same ones: a round's weights are by super-cluster number, so fitting a predictor on rounds
    made on other super-clusters would mix meanings. A Failure naming what to rematerialize
    when they are not; a warning when an iteration predates recorded identities."""
    current = current_super_clusters_id(layout)
    earlier = [(iteration_key(i), read_summary(layout, iteration_key(i))) for i in range(1, before)]
    try:
        verdict = check_iterations(consumer, earlier, current)
    except StaleInput as err:
        raise dg.Failure(description=str(err)) from err
    if verdict.warning:
        context.log.warning(verdict.warning)
    return current


@dg.asset(
    deps=[
        proxy_pool,
        dg.AssetDep("mixture_predictor", partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep("proxy_scores", partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name="search",
    kinds={"lightgbm", "pytorch"},
    code_version="5",  # 5: records the super-clusters' identity
    pool="gpu",
    check_specs=[
        dg.AssetCheckSpec(
            "weights_on_simplex",
            asset="optimal_mixture",
            description="The chosen weights are non-negative and sum to 1.",
        )
    ],
    description="The search's final mixture over the super-clusters: the predictor's choice "
    "(mean of the top-k of a large candidate pool within the best region, never predicted worse "
    "than the best observed run), the best observed run and the best single super-cluster "
    "within the caps race on fresh proxy seeds and the best mean wins; with the whole search "
    "trace and its noise.",
)
@one_line_failures
def optimal_mixture(
    context: dg.AssetExecutionContext, climb: ClimbSettings
) -> dg.MaterializeResult:
    from climb_assets.core.search.mixtures import build_constraints
    from climb_assets.core.search.result import chosen_weights, optimal_mixture_record
    from climb_assets.core.search.strategy import choose_optimal_mixture as choose_optimal
    from climb_assets.core.shared.plots import objective_by_iteration

    settings, layout = climb.resolve()
    last = settings.iterations
    history = iteration_runs(layout, last + 1)
    assert history is not None
    clusters_id = checked_super_clusters(context, layout, "optimal_mixture", last + 1)
    token_counts = corpus_token_counts(layout, settings)
    best = choose_optimal(
        history,
        token_counts,
        settings.search,
        constraint_budget(settings),
        settings.seed,
        maximize=True,
        predictor_settings=settings.predictor,
    )
    summaries = [read_summary(layout, iteration_key(i)) for i in range(1, settings.iterations + 1)]
    supers = pl.read_parquet(layout.super_clusters).sort("super_cluster")
    constraints = build_constraints(token_counts, settings.search, constraint_budget(settings))
    caps = constraints.upper
    race = final_race(context, settings, layout, best, history, constraints)
    weights = chosen_weights(best, race)
    mixture = supers.select("super_cluster", "token_share", "top_terms").with_columns(
        pl.Series("weight", weights[: supers.height]),
        pl.Series("cap", caps[: supers.height]),
        pl.Series("predicted_choice_weight", best.weights[: supers.height]),
        pl.Series("best_observed_weight", best.best_observed_weights[: supers.height]),
    )
    choice = best.choice
    result = optimal_mixture_record(
        best,
        race,
        caps,
        settings,
        summaries,
        search_seed_noise(race, layout, settings.iterations),
        clusters_id,
    )
    spread = result["predicted_spread"]
    write_json(result, layout.optimal_mixture)
    identity = search_id(read_optimal(layout))  # of what consumers will read back
    shutil.rmtree(layout.final_race_work, ignore_errors=True)  # decided and written
    spearman = {f"iter-{s['iteration']:03d}": s["cv_spearman"] for s in summaries}
    on_simplex = bool(np.all(weights >= 0) and abs(weights.sum() - 1) < 1e-6)
    names = super_cluster_names_of(supers)
    page = write_report(layout)  # the HTML page now shows this result too
    return dg.MaterializeResult(
        metadata={
            "predicted_objective": rounded(result["predicted_objective"]),
            "predicted_spread": rounded(spread),
            "best_observed_predicted": rounded(choice.best_observed_predicted),
            "best_observed_objective": rounded(best.best_observed_score),
            "choice_method": f"{result['choice_method']}; the predictor's choice: "
            f"{choice.method} (region of {choice.region_size} of the top "
            f"{settings.search.final_top_k})",
            **race_metadata(race),
            "seed_noise": or_na(result["seed_noise"]),
            "seed_noise_from": result["seed_noise_from"] or "n/a",
            "objective_direction": "higher is better",
            SUPER_CLUSTERS_ID: clusters_id,
            SEARCH_ID: identity,
            "mixture": table(
                named(mixture, names)
                .select(
                    "name",
                    "weight",
                    "cap",
                    "predicted_choice_weight",
                    "best_observed_weight",
                    "token_share",
                )
                .sort("weight", descending=True)
            ),
            "dagster/row_count": mixture.height,
            "cv_spearman_per_iteration": per_iteration(spearman, "predictor cv spearman"),
            "noise_per_iteration": table(noise_table(summaries)),
            "all_candidates": runs_table(history, 100),
            "score_by_iteration": plot(
                objective_by_iteration(history),
                "objective by iteration",
            ),
            **report_metadata(page),
        },
        check_results=[dg.AssetCheckResult(check_name="weights_on_simplex", passed=on_simplex)],
    )
