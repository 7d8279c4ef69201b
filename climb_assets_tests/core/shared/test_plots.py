import numpy as np

from climb_assets.core.shared.plots import histogram

PNG = b"\x89PNG"


def test_a_histogram_of_values_equal_up_to_rounding_draws() -> None:
    # numpy alone refuses: "Too many bins for data range. Cannot create 20 finite-sized bins"
    nearly_equal = [0.9, 0.9000000000000001, 0.9, float("nan")]
    with np.testing.assert_raises(ValueError):
        np.histogram(nearly_equal[:3], bins=20)
    assert histogram(nearly_equal, 20, "quality").startswith(PNG)
    assert histogram([], 20, "nothing").startswith(PNG)
    assert histogram(np.linspace(0, 1, 50), 20, "spread").startswith(PNG)
