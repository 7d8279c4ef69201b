"""Fixtures of the search's tests."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Proxies train with one torch thread (proxy.cpu_threads' default); tiny models gain
    nothing from a second, and lose much when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
