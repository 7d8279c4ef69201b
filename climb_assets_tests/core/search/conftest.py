"""Fixtures of the search's tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from climb_assets_tests.core.search.tiny_search import build_tiny_pool


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Proxies train with one torch thread (proxy.cpu_threads' default); tiny models gain
    nothing from a second, and lose much when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny search's proxy pool (tiny_search.py)."""
    return build_tiny_pool(tmp_path_factory.mktemp("pool") / "pool")
