import math

from climb_assets.core.clustering.naming import (
    round_for_reading,
    super_cluster_name,
    super_cluster_names,
)


def test_super_clusters_are_named_by_their_first_terms() -> None:
    assert super_cluster_name(3, ["lord", "god", "thee", "unto"]) == "3: lord, god, thee"
    assert super_cluster_name(0, []) == "0"
    assert super_cluster_names([(1, ["a"]), (2, None)]) == {1: "1: a", 2: "2"}


def test_numbers_are_rounded_to_four_significant_digits() -> None:
    assert round_for_reading(0.123456789) == 0.1235
    assert round_for_reading(1234.5678) == 1235.0
    assert round_for_reading(1.5e-7) == 1.5e-7
    assert round_for_reading(math.nan) is None and round_for_reading(math.inf) is None
