"""FedTiny's mask math on small hand-checked cases: candidate densities, layer-wise magnitude masks,
the cosine adjustment fraction, the block counter, clients' top-K reports and prune-and-grow."""
import math

import numpy as np
import pytest

from tff_sparsify.core import prune_grow

LAYERS = [3 * 3 * 3 * 64, 3 * 3 * 64 * 64, 3 * 3 * 64 * 128, 128 * 10]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("density", [0.01, 0.05])
def test_candidates_keep_the_density_within_2_percent_and_layers_within_half(seed, density):
    densities = prune_grow.candidate_densities(LAYERS, density, np.random.default_rng(seed))
    assert all(0.5 * density <= d <= 1.5 * density for d in densities)
    kept = sum(prune_grow.kept_per_layer(LAYERS, densities))
    assert abs(kept / sum(LAYERS) - density) <= 0.02 * density


def test_candidates_differ_and_impossible_budgets_are_refused():
    rng = np.random.default_rng(0)
    assert prune_grow.candidate_densities(LAYERS, 0.01, rng) != prune_grow.candidate_densities(LAYERS, 0.01, rng)
    with pytest.raises(ValueError, match="no per-layer densities"):
        prune_grow.candidate_densities([3, 3], 0.1, rng)  # Each layer keeps 1 of 3: density 0.33.


def test_layer_magnitude_masks_keep_the_largest_per_layer():
    kernels = [np.float32([[0.5, -3.0], [2.0, 0.1]]), np.float32([1.0, -1.0, 0.2, 4.0, 0.0])]
    masks = prune_grow.layer_magnitude_masks(kernels, [0.5, 0.1])  # floor(2) = 2; max(floor(0.5), 1) = 1.
    np.testing.assert_array_equal(masks[0], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(masks[1], [0, 0, 0, 1, 0])


def test_adjustment_fraction_is_a_cosine_from_alpha_to_zero():
    assert float(prune_grow.adjustment_fraction(0.2, 0, 100)) == pytest.approx(0.2)
    assert float(prune_grow.adjustment_fraction(0.2, 50, 100)) == pytest.approx(0.1)
    assert float(prune_grow.adjustment_fraction(0.2, 100, 100)) == pytest.approx(0.0, abs=1e-12)
    assert int(prune_grow.adjustment_size(0.1, 25)) == math.ceil(2.5) == 3


def test_block_counter_cycles_from_the_output_to_the_input():
    assert [prune_grow.selected_block(i, 4) for i in range(6)] == [3, 2, 1, 0, 3, 2]


def test_top_k_inactive_reports_the_largest_gradients_of_inactive_positions_only():
    gradient = np.float32([0.9, -0.5, 0.3, -0.8, 0.05, 0.7])
    mask = np.float32([1, 0, 0, 0, 1, 0])  # 0.9 is active: never reported.
    indices, values = prune_grow.top_k_inactive(gradient, mask, 2)
    np.testing.assert_array_equal(indices, [3, 5])
    np.testing.assert_array_equal(values, np.float32([-0.8, 0.7]))
    indices, _ = prune_grow.top_k_inactive(gradient, mask, 10)  # Capped at the 4 inactive positions.
    np.testing.assert_array_equal(indices, [1, 2, 3, 5])


def test_prune_and_grow_on_a_ten_weight_layer_keeps_nnz():
    kernel = np.float32([0.5, 0, -0.1, 0, 2.0, 0, 0, -0.3, 0, 1.0])
    mask = np.float32([1, 0, 1, 0, 1, 0, 0, 1, 0, 1])  # 5 active.
    gradient = np.float32([9, 0.2, 9, -0.7, 9, 0.1, 0.6, 9, -0.05, 9])  # Active entries are ignored.
    new_kernel, new_mask = prune_grow.prune_and_grow(kernel, mask, gradient, 2)
    # Pruned: the 2 smallest |w| among active, -0.1 (2) and -0.3 (7); grown: the 2 largest |g| among
    # inactive, -0.7 (3) and 0.6 (6), starting at 0.
    np.testing.assert_array_equal(new_mask, [1, 0, 0, 1, 1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(new_kernel, [0.5, 0, 0, 0, 2.0, 0, 0, 0, 0, 1.0])
    assert new_mask.numpy().sum() == mask.sum()
