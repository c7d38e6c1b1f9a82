import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify.core.pruning import apply_masks, count_nonzero, magnitude_masks, sparsity

# Ten weights in two tensors. Magnitudes in increasing order: 0.05 (b[0]), 0.1 (a[0, 1]),
# 0.2 (a[1, 1]), 0.3 (a[0, 2]), 0.4 (b[2]), 0.5, 0.6, 0.7, 0.9, 1.0.
A = np.array([[0.5, -0.1, 0.3], [0.9, 0.2, -0.7]], np.float32)
B = np.array([0.05, 1.0, -0.4, 0.6], np.float32)


def as_numpy(tensors):
    return [t.numpy() for t in tensors]


def assert_masks_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == tf.float32
        np.testing.assert_array_equal(a.numpy(), np.asarray(e, np.float32))


def reference_masks(weights, s, masks=None):
    """Stable sort by |w|, already-pruned positions first: the definition magnitude_masks follows."""
    keys = np.concatenate([np.abs(w).ravel() for w in weights]).astype(np.float32)
    if masks is not None:
        keys[np.concatenate([m.ravel() for m in masks]) == 0] = -1.0
    k = max(int(np.floor(s * keys.size + 0.5)), int((keys < 0).sum()))
    flat = np.ones(keys.size, np.float32)
    flat[np.argsort(keys, kind="stable")[:k]] = 0.0
    return [m.reshape(w.shape) for m, w in zip(np.split(flat, np.cumsum([w.size for w in weights])[:-1]), weights)]


def random_weights(seed, shapes=((3, 4, 5), (7,), (2, 2, 2, 2), (1,))):
    rng = np.random.default_rng(seed)
    # One decimal: many ties, also across tensors and between signs.
    return [np.round(rng.standard_normal(shape), 1).astype(np.float32) for shape in shapes]


@pytest.mark.parametrize(
    "s,expected_a,expected_b",
    [
        (0.0, [[1, 1, 1], [1, 1, 1]], [1, 1, 1, 1]),
        (0.3, [[1, 0, 1], [1, 0, 1]], [0, 1, 1, 1]),
        (0.5, [[1, 0, 0], [1, 0, 1]], [0, 1, 0, 1]),
        (0.25, [[1, 0, 1], [1, 0, 1]], [0, 1, 1, 1]),  # 2.5 rounds half up: k = 3.
        (0.9, [[0, 0, 0], [0, 0, 0]], [0, 1, 0, 0]),
    ],
)
def test_ten_weight_example(s, expected_a, expected_b):
    assert_masks_equal(magnitude_masks([A, B], s), [expected_a, expected_b])


def test_ties_prune_the_earliest_position_first():
    assert_masks_equal(magnitude_masks([np.ones(4, np.float32)], 0.5), [[0, 0, 1, 1]])
    # Across tensors and signs: layer order, then row-major.
    weights = [np.array([[2.0, -1.0]], np.float32), np.array([1.0, -1.0], np.float32)]
    assert_masks_equal(magnitude_masks(weights, 0.5), [[[1, 0]], [0, 1]])


def test_threshold_is_global_not_per_layer():
    small = np.array([0.01, -0.02, 0.03, 0.04], np.float32)
    large = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    assert_masks_equal(magnitude_masks([large, small], 0.4), [np.ones((2, 3)), np.zeros(4)])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("s", [0.01, 0.1, 0.33, 0.5, 0.77, 0.95])
def test_exactly_round_s_n_zeros_matching_the_reference(seed, s):
    weights = random_weights(seed)
    masks = as_numpy(magnitude_masks(weights, s))
    n = sum(w.size for w in weights)
    assert sum(int((m == 0).sum()) for m in masks) == int(np.floor(s * n + 0.5))
    for actual, expected in zip(masks, reference_masks(weights, s)):
        np.testing.assert_array_equal(actual, expected)


def test_nested_masks_keep_pruned_weights_pruned_and_count_exactly():
    weights = random_weights(2)
    n = sum(w.size for w in weights)
    # Current masks prune the 5 largest magnitudes and 5 random others.
    flat = np.concatenate([w.ravel() for w in weights])
    current_flat = np.ones(n, np.float32)
    current_flat[np.argsort(-np.abs(flat), kind="stable")[:5]] = 0.0
    current_flat[np.random.default_rng(3).choice(n, 5, replace=False)] = 0.0
    current = [m.reshape(w.shape) for m, w in zip(np.split(current_flat, np.cumsum([w.size for w in weights])[:-1]), weights)]
    already = int((current_flat == 0).sum())

    for s in (0.2, 0.6):
        new = as_numpy(magnitude_masks(weights, s, masks=current))
        new_flat = np.concatenate([m.ravel() for m in new])
        assert np.all(new_flat[current_flat == 0] == 0)  # No regrowth.
        assert int((new_flat == 0).sum()) == max(already, int(np.floor(s * n + 0.5)))
        for actual, expected in zip(new, reference_masks(weights, s, current)):
            np.testing.assert_array_equal(actual, expected)


def test_lower_target_than_current_leaves_masks_unchanged():
    current = [np.array([[0, 1, 1], [1, 1, 0]], np.float32), np.array([1, 1, 1, 0], np.float32)]
    for s in (0.0, 0.1, 0.3):  # k = 0, 1, 3: below the 3 already pruned, or equal.
        assert_masks_equal(magnitude_masks([A, B], s, masks=current), current)
    # Prunes the already-pruned positions first (a[0, 0], a[1, 2] and b[3] are large).
    assert_masks_equal(
        magnitude_masks([A, B], 0.5, masks=current), [[[0, 0, 1], [1, 1, 0]], [0, 1, 1, 0]]
    )


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_works_in_tf_function_with_a_tensor_sparsity(dtype):
    weights = random_weights(4)
    current = reference_masks(weights, 0.2)
    prune = tf.function(magnitude_masks)
    for s in (0.0, 0.3, 0.6):
        for masks in (None, current):
            expected = as_numpy(magnitude_masks(weights, s, masks))
            actual = prune(weights, tf.constant(s, dtype), masks)
            for a, e in zip(actual, expected):
                np.testing.assert_array_equal(a.numpy(), e)


def test_works_with_unknown_shapes():
    prune = tf.function(
        magnitude_masks,
        input_signature=[[tf.TensorSpec([None, 3]), tf.TensorSpec(None)], tf.TensorSpec([])],
    )
    assert_masks_equal(prune([A, B], tf.constant(0.5)), [[[1, 0, 0], [1, 0, 1]], [0, 1, 0, 1]])


def test_works_in_a_tf1_style_graph():
    # TFF builds its TensorFlow computations this way (where `tensor == tensor` is not elementwise).
    with tf.Graph().as_default():
        s = tf.compat.v1.placeholder(tf.float32, [])
        current = [tf.constant([[0, 1, 1], [1, 1, 1]], tf.float32), tf.ones([4])]
        masks = magnitude_masks([tf.constant(A), tf.constant(B)], s, current)
        with tf.compat.v1.Session() as session:
            a, b = session.run(masks, {s: 0.5})
    np.testing.assert_array_equal(a, [[0, 0, 0], [1, 0, 1]])  # a[0, 0] stays pruned.
    np.testing.assert_array_equal(b, [0, 1, 1, 1])


def test_works_in_a_tff_computation():
    tff = pytest.importorskip("tensorflow_federated")
    spec = [tff.TensorType(np.float32, A.shape), tff.TensorType(np.float32, B.shape)]

    @tff.tensorflow.computation(spec, spec, np.float32)
    def prune(weights, masks, s):
        new_masks = magnitude_masks(weights, s, masks)
        return new_masks, sparsity(new_masks), count_nonzero(apply_masks(weights, new_masks))

    current = [np.ones(A.shape, np.float32), np.array([1, 0, 1, 1], np.float32)]
    masks, realized, nonzero = prune([A, B], current, 0.3)
    # The target counts earlier zeros: b[1] (already pruned) and the two smallest, b[0] and a[0, 1].
    np.testing.assert_array_equal(masks[0], [[1, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(masks[1], [0, 0, 1, 1])
    assert realized == pytest.approx(0.3)
    assert nonzero == 7


@pytest.mark.parametrize("s", [1.0, -0.1, 1.5, float("nan")])
def test_invalid_python_sparsity(s):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        magnitude_masks([A, B], s)


@pytest.mark.parametrize("s", [1.0, -0.1])
def test_invalid_tensor_sparsity(s):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"sparsity must be in \[0, 1\)"):
        magnitude_masks([A, B], tf.constant(s))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="weights must hold at least one tensor"):
        magnitude_masks([], 0.5)
    with pytest.raises(ValueError, match="masks must match weights one to one"):
        magnitude_masks([A, B], 0.5, masks=[np.ones(A.shape)])
    with pytest.raises(ValueError, match="masks must match weights one to one"):
        apply_masks([A, B], [np.ones(A.shape)])
    with pytest.raises(ValueError, match="tensors must hold at least one tensor"):
        sparsity([])


def test_apply_masks_multiplies_and_keeps_dtypes():
    weights = [A, B.astype(np.float64)]
    masks = magnitude_masks(weights, 0.3)
    pruned = apply_masks(weights, masks)
    assert [p.dtype for p in pruned] == [tf.float32, tf.float64]
    np.testing.assert_array_equal(pruned[0], A * np.array([[1, 0, 1], [1, 0, 1]], np.float32))
    np.testing.assert_array_equal(pruned[1], B.astype(np.float64) * [0, 1, 1, 1])


def test_sparsity_and_count_nonzero():
    masks = magnitude_masks([A, B], 0.3)
    assert sparsity(masks).dtype == tf.float32
    assert sparsity(masks).numpy() == pytest.approx(0.3)
    assert sparsity([A, B]).numpy() == 0.0
    assert sparsity([np.zeros((2, 2)), np.array([0.0, 1.0, 2.0, 0.0])]).numpy() == pytest.approx(0.75)
    nonzero = count_nonzero(apply_masks([A, B], masks))
    assert nonzero.dtype == tf.int64 and int(nonzero) == 7


# Block pruning (`block_size`): blocks are given in TFLite's [out, in] layout, so on a Keras [in, out]
# kernel a (1, 4) block is 4 consecutive rows of one column.


def split_like(flat, weights):
    return [m.reshape(w.shape) for m, w in zip(np.split(flat, np.cumsum([w.size for w in weights])[:-1]), weights)]


def reference_block_masks(weights, s, block_size, masks=None):
    """The documented definition, unit by unit: stable sort of the blocks (single weights for tensors
    that are not 2-D) by mean |w * mask|, fully pruned blocks first; prune in that order the fewest
    blocks whose zeros (with those already pruned) reach k."""
    rows, cols = block_size
    masks = [np.ones(w.shape, np.float32) for w in weights] if masks is None else masks
    means, counts = [], []
    for w, m in zip(weights, masks):
        kept = (m != 0).astype(np.float32)
        magnitudes = np.abs(w).astype(np.float32) * kept
        if w.ndim == 2:
            grid = (w.shape[0] // cols, cols, w.shape[1] // rows, rows)
            sums = magnitudes.reshape(grid).sum(axis=(1, 3), dtype=np.float64)
            means.append((sums.astype(np.float32) / np.float32(rows * cols)).ravel())
            counts.append(kept.reshape(grid).sum(axis=(1, 3)).ravel().astype(np.int64))
        else:
            means.append(magnitudes.ravel())
            counts.append(kept.ravel().astype(np.int64))
    keys = np.concatenate(means).astype(np.float64)
    counts = np.concatenate(counts)
    keys[counts == 0] = -1.0
    n = sum(w.size for w in weights)
    k = int(np.floor(s * n + 0.5))
    zeros = n - int(counts.sum())
    pruned = counts == 0
    for unit in np.argsort(keys, kind="stable"):
        if zeros >= k:
            break
        if not pruned[unit]:
            pruned[unit] = True
            zeros += int(counts[unit])
    result = []
    for w, m, unit_pruned in zip(weights, masks, np.split(pruned, np.cumsum([c.size for c in means])[:-1])):
        if w.ndim == 2:
            grid = (w.shape[0] // cols, 1, w.shape[1] // rows, 1)
            expanded = np.broadcast_to(unit_pruned.reshape(grid), (grid[0], cols, grid[2], rows))
            positions = expanded.reshape(w.shape)
        else:
            positions = unit_pruned.reshape(w.shape)
        result.append(np.where(positions | (m == 0), 0.0, 1.0).astype(np.float32))
    return result


def dyadic_weights(seed, shapes):
    """Multiples of 1/8 in [-4, 4]: block sums and means are exact, so ties are exact, many."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(-32, 33, shape) / 8).astype(np.float32) for shape in shapes]


def assert_whole_blocks(mask, block_size):
    """In TFLite layout [out, in], each r x c block of the mask is all zeros or all ones."""
    rows, cols = block_size
    tflite = mask.T
    blocks = tflite.reshape(tflite.shape[0] // rows, rows, tflite.shape[1] // cols, cols)
    assert np.all(blocks.min(axis=(1, 3)) == blocks.max(axis=(1, 3)))


# An 8x2 Keras kernel (8 inputs, 2 outputs); with (1, 4) blocks: 4 blocks of 4 consecutive rows of a
# column. Block means: (rows 0-3, col 0) = 1.0 (one large weight, small mean), (rows 0-3, col 1) =
# 2.0, (rows 4-7, col 0) = 3.0, (rows 4-7, col 1) = 0.5.
HAND = np.array(
    [[0.0, 2.0], [0.0, -2.0], [0.0, 2.0], [-4.0, 2.0], [3.0, 0.5], [3.0, -0.5], [-3.0, 0.5], [3.0, 0.5]],
    np.float32,
)
HAND_BLOCKS = {  # Block (input block i, output j) -> its mask, pruned.
    (0, 0): [[0, 1]] * 4 + [[1, 1]] * 4,
    (1, 1): [[1, 1]] * 4 + [[1, 0]] * 4,
    (0, 1): [[1, 0]] * 4 + [[1, 1]] * 4,
    (1, 0): [[1, 1]] * 4 + [[0, 1]] * 4,
}


def hand_mask(*pruned_blocks):
    mask = np.ones(HAND.shape, np.float32)
    for block in pruned_blocks:
        mask *= np.asarray(HAND_BLOCKS[block], np.float32)
    return mask


@pytest.mark.parametrize(
    "s,pruned_blocks",
    [
        (0.0, []),
        (0.5, [(1, 1), (0, 0)]),  # k = 8: exactly the two blocks of smallest mean (0.5, 1.0).
        (0.25, [(1, 1)]),  # k = 4: one block.
        (0.1, [(1, 1)]),  # k = 2: the fewest whole blocks reaching k, one (4 zeros).
        (0.3, [(1, 1), (0, 0)]),  # k = 5: one block has only 4, so two (8 zeros), never fewer than k.
        (0.75, [(1, 1), (0, 0), (0, 1)]),  # k = 12.
        (0.8, [(1, 1), (0, 0), (0, 1), (1, 0)]),  # k = 13 (12.8 + 0.5 floored): 3 blocks have 12.
    ],
)
def test_block_hand_example(s, pruned_blocks):
    assert_masks_equal(magnitude_masks([HAND], s, block_size=(1, 4)), [hand_mask(*pruned_blocks)])


def test_block_ranking_is_by_mean_not_max():
    # Block (0, 0) holds the kernel's largest |w| (4.0) but the smallest mean but one: pruned second.
    masks = magnitude_masks([HAND], 0.5, block_size=(1, 4))[0].numpy()
    assert masks[3, 0] == 0 and HAND[3, 0] == -4.0


def test_block_orientation_follows_tflite_out_in_layout():
    # (1, 4): one output unit x 4 inputs = 4 rows of one Keras column; (4, 1) would be 4 columns of a row.
    weights = dyadic_weights(0, [(16, 8)])
    for block_size, keras_block in (((1, 4), (4, 1)), ((4, 1), (1, 4)), ((2, 4), (4, 2))):
        mask = magnitude_masks(weights, 0.5, block_size=block_size)[0].numpy()
        assert_whole_blocks(mask, block_size)
        # The same statement in Keras layout: a (rows, cols) Keras block of constant mask.
        grid = mask.reshape(16 // keras_block[0], keras_block[0], 8 // keras_block[1], keras_block[1])
        assert np.all(grid.min(axis=(1, 3)) == grid.max(axis=(1, 3)))
        assert (mask == 0).sum() == 64


FC_SHAPES = ((784, 128), (128, 128), (128, 10))  # The paper's 784-128-128-10 model, Keras [in, out].


@pytest.mark.parametrize("block_size", [(1, 4), (1, 16)])
@pytest.mark.parametrize("s", [0.5, 0.9])
def test_block_fc_shapes_whole_zero_blocks_at_the_target(block_size, s):
    weights = dyadic_weights(1, FC_SHAPES)
    masks = as_numpy(magnitude_masks(weights, s, block_size=block_size))
    n = sum(w.size for w in weights)
    k = int(np.floor(s * n + 0.5))
    zeros = sum(int((m == 0).sum()) for m in masks)
    block = block_size[0] * block_size[1]
    assert k <= zeros < k + block  # The target, rounded up to whole blocks.
    for m in masks:
        assert_whole_blocks(m, block_size)
    for actual, expected in zip(masks, reference_block_masks(weights, s, block_size)):
        np.testing.assert_array_equal(actual, expected)


MIXED_SHAPES = ((12, 6), (3, 3, 2, 4), (7,), (6, 4))  # Two Keras kernels, a conv kernel, a vector.


@pytest.mark.parametrize("block_size", [(1, 2), (1, 3), (2, 2), (2, 3), (1, 6)])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("s", [0.01, 0.2, 0.5, 0.77, 0.95])
def test_block_masks_match_the_reference(block_size, seed, s):
    weights = dyadic_weights(seed, MIXED_SHAPES)
    masks = as_numpy(magnitude_masks(weights, s, block_size=block_size))
    for actual, expected in zip(masks, reference_block_masks(weights, s, block_size)):
        np.testing.assert_array_equal(actual, expected)
    for m, w in zip(masks, weights):
        if w.ndim == 2:
            assert_whole_blocks(m, block_size)


def test_block_ties_prune_the_earliest_block_first():
    ones = np.ones((8, 2), np.float32)
    # Block order: (rows 0-3, col 0), (rows 0-3, col 1), (rows 4-7, col 0), (rows 4-7, col 1).
    assert_masks_equal(magnitude_masks([ones], 0.5, block_size=(1, 4)), [[[0, 0]] * 4 + [[1, 1]] * 4])
    assert_masks_equal(magnitude_masks([ones], 0.25, block_size=(1, 4)), [[[0, 1]] * 4 + [[1, 1]] * 4])
    # Across tensors: layer order first. Equal means from different values and signs tie too.
    first = np.array([[3.0], [-1.0], [1.0], [-3.0]], np.float32)  # One block, mean 2.
    second = np.full((4, 1), -2.0, np.float32)  # One block, mean 2.
    pruned_first = [np.zeros((4, 1)), np.ones((4, 1))]
    assert_masks_equal(magnitude_masks([first, second], 0.5, block_size=(1, 4)), pruned_first)
    assert_masks_equal(magnitude_masks([second, first], 0.5, block_size=(1, 4)), pruned_first)


def test_block_nested_masks_stay_whole_blocks_and_only_shrink():
    weights = dyadic_weights(2, FC_SHAPES)
    n = sum(w.size for w in weights)
    current = as_numpy(magnitude_masks(weights, 0.5, block_size=(1, 4)))
    # Make some blocks of large weights already pruned: they stay pruned, counted in the target.
    current[1][0:4, 0] = 0.0
    current[1][4:8, 5] = 0.0
    current_zeros = sum(int((m == 0).sum()) for m in current)
    for s in (0.0, 0.3, current_zeros / n):  # Targets at or below what is pruned: unchanged.
        assert_masks_equal(magnitude_masks(weights, s, current, block_size=(1, 4)), current)
    for s in (0.7, 0.9):
        new = as_numpy(magnitude_masks(weights, s, current, block_size=(1, 4)))
        for m, c in zip(new, current):
            assert np.all(m[c == 0] == 0)  # No regrowth.
            assert_whole_blocks(m, (1, 4))
        k = int(np.floor(s * n + 0.5))
        assert k <= sum(int((m == 0).sum()) for m in new) < k + 4
        for actual, expected in zip(new, reference_block_masks(weights, s, (1, 4), current)):
            np.testing.assert_array_equal(actual, expected)


def test_block_partly_pruned_blocks_keep_their_zeros_and_rank_by_the_masked_mean():
    weights = [HAND]
    # Unstructured current mask: prunes the 4.0 of block (0, 0) and one 3.0 of block (1, 0).
    current = np.ones(HAND.shape, np.float32)
    current[3, 0] = current[4, 0] = 0.0
    # Masked means: (0, 0) = 0, (0, 1) = 2.0, (1, 0) = 2.25, (1, 1) = 0.5. k = 4 with 2 zeros already:
    # the smallest block (0, 0) adds its 3 kept positions: 5 zeros.
    expected = current * hand_mask((0, 0))
    assert_masks_equal(magnitude_masks(weights, 0.25, [current], block_size=(1, 4)), [expected])
    # k = 8: (0, 0) adds 3 (5 zeros), (1, 1) adds 4 (9 zeros).
    expected = current * hand_mask((0, 0), (1, 1))
    assert_masks_equal(magnitude_masks(weights, 0.5, [current], block_size=(1, 4)), [expected])
    for s in (0.25, 0.5, 0.8):
        for actual, e in zip(magnitude_masks(weights, s, [current], block_size=(1, 4)),
                             reference_block_masks(weights, s, (1, 4), [current])):
            np.testing.assert_array_equal(actual.numpy(), e)
    # Random unstructured masks on mixed shapes too.
    weights = dyadic_weights(3, MIXED_SHAPES)
    current = reference_masks(weights, 0.3)
    for s in (0.2, 0.5, 0.9):
        new = as_numpy(magnitude_masks(weights, s, current, block_size=(2, 2)))
        for m, c in zip(new, current):
            assert np.all(m[c == 0] == 0)
        for actual, expected in zip(new, reference_block_masks(weights, s, (2, 2), current)):
            np.testing.assert_array_equal(actual, expected)


def test_block_tensors_that_are_not_2d_are_pruned_per_weight():
    # Conv kernels and vectors are 1x1 blocks: with no 2-D tensor, block pruning is unstructured.
    weights = random_weights(5)  # Shapes (3, 4, 5), (7,), (2, 2, 2, 2), (1,): none is 2-D.
    current = reference_masks(weights, 0.2)
    for s in (0.1, 0.5, 0.9):
        for masks in (None, current):
            expected = as_numpy(magnitude_masks(weights, s, masks))
            actual = as_numpy(magnitude_masks(weights, s, masks, block_size=(1, 4)))
            for a, e in zip(actual, expected):
                np.testing.assert_array_equal(a, e)


def test_block_size_one_by_one_is_the_unstructured_default():
    weights = random_weights(6, ((5, 3), (4,), (2, 3, 2)))
    current = reference_masks(weights, 0.3)
    for s in (0.0, 0.25, 0.6):
        for masks in (None, current):
            default = as_numpy(magnitude_masks(weights, s, masks))
            for block_size in ((1, 1), [1, 1], (np.int64(1), 1)):
                for a, e in zip(magnitude_masks(weights, s, masks, block_size=block_size), default):
                    np.testing.assert_array_equal(a.numpy(), e)


@pytest.mark.parametrize(
    "shape,block_size",
    [
        ((128, 10), (4, 1)),  # The FC model's last kernel with blocks along its 10 outputs.
        ((128, 10), (16, 1)),
        ((10, 128), (1, 4)),  # 10 inputs: not a multiple of 4.
        ((12, 6), (1, 8)),
    ],
)
def test_block_size_that_does_not_tile_a_2d_tensor_raises(shape, block_size):
    weights = [np.ones((16, 16), np.float32), np.ones(shape, np.float32)]
    with pytest.raises(ValueError, match=r"block_size .* does not tile weights\[1\]"):
        magnitude_masks(weights, 0.5, block_size=block_size)


@pytest.mark.parametrize(
    "block_size", [(0, 4), (1, -4), (4,), (1, 2, 3), 4, "14", (1.0, 4), (True, 4), None, (1, None)]
)
def test_invalid_block_size(block_size):
    with pytest.raises(ValueError, match="block_size must be two integers >= 1"):
        magnitude_masks([HAND], 0.5, block_size=block_size)


def test_block_size_needs_static_2d_shapes():
    prune = tf.function(
        lambda w, s: magnitude_masks(w, s, block_size=(1, 4)),
        input_signature=[[tf.TensorSpec([None, 2])], tf.TensorSpec([])],
    )
    with pytest.raises(ValueError, match="block_size .* statically known"):
        prune([HAND], tf.constant(0.5))
    prune = tf.function(
        lambda w, s: magnitude_masks(w, s, block_size=(1, 4)),
        input_signature=[[tf.TensorSpec(None)], tf.TensorSpec([])],
    )
    with pytest.raises(ValueError, match="block_size .* known rank"):
        prune([HAND], tf.constant(0.5))
    # Tensors that are not 2-D may have unknown dimensions.
    prune = tf.function(
        lambda w, s: magnitude_masks(w, s, block_size=(1, 4)),
        input_signature=[[tf.TensorSpec([8, 2]), tf.TensorSpec([None])], tf.TensorSpec([])],
    )
    assert_masks_equal(
        prune([HAND, B], tf.constant(0.5)),
        magnitude_masks([HAND, B], 0.5, block_size=(1, 4)),
    )


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_block_works_in_tf_function_with_a_tensor_sparsity(dtype):
    weights = dyadic_weights(4, FC_SHAPES)
    current = as_numpy(magnitude_masks(weights, 0.3, block_size=(1, 16)))
    prune = tf.function(lambda w, s, m: magnitude_masks(w, s, m, block_size=(1, 16)))
    for s in (0.0, 0.5, 0.9):
        for masks in (None, current):
            actual = as_numpy(prune(weights, tf.constant(s, dtype), masks))
            for a, e in zip(actual, reference_block_masks(weights, s, (1, 16), masks)):
                np.testing.assert_array_equal(a, e)
            for a, e in zip(actual, magnitude_masks(weights, s, masks, block_size=(1, 16))):
                np.testing.assert_array_equal(a, e.numpy())


def test_block_invalid_tensor_sparsity():
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"sparsity must be in \[0, 1\)"):
        magnitude_masks([HAND], tf.constant(1.0), block_size=(1, 4))


def test_block_works_in_a_tf1_style_graph():
    with tf.Graph().as_default():
        s = tf.compat.v1.placeholder(tf.float32, [])
        current = tf.constant(hand_mask((0, 1)))
        masks = magnitude_masks([tf.constant(HAND)], s, [current], block_size=(1, 4))
        with tf.compat.v1.Session() as session:
            (half,) = session.run(masks, {s: 0.5})
            (quarter,) = session.run(masks, {s: 0.25})
    # Block (0, 1) stays pruned and counts: k = 8 adds only the smallest block, (1, 1).
    np.testing.assert_array_equal(half, hand_mask((0, 1), (1, 1)))
    np.testing.assert_array_equal(quarter, hand_mask((0, 1)))


def test_block_works_in_a_tff_computation():
    tff = pytest.importorskip("tensorflow_federated")
    spec = [tff.TensorType(np.float32, HAND.shape), tff.TensorType(np.float32, B.shape)]

    @tff.tensorflow.computation(spec, spec, np.float32)
    def prune(weights, masks, s):
        new_masks = magnitude_masks(weights, s, masks, block_size=(1, 4))
        return new_masks, sparsity(new_masks)

    current = [np.ones(HAND.shape, np.float32), np.ones(B.shape, np.float32)]
    masks, realized = prune([HAND, B], current, 0.4)
    # 20 weights, k = 8. B is 1-D: its weights are 1x1 blocks in the same ranking. In order: b[0] (0.05),
    # b[2] (0.4), block (1, 1) (mean 0.5): 6 zeros; b[3] (0.6): 7; then block (0, 0) and b[1] tie at
    # 1.0 and the earlier layer goes first: block (0, 0) brings 11 zeros >= 8.
    np.testing.assert_array_equal(masks[0], hand_mask((1, 1), (0, 0)))
    np.testing.assert_array_equal(masks[1], [0, 1, 0, 0])
    assert realized == pytest.approx(11 / 20)
    for actual, expected in zip(masks, reference_block_masks([HAND, B], 0.4, (1, 4))):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(
    "quantize,block_size,block_dense_size",
    [("none", (1, 4), 4), ("dynamic_int8", (1, 16), 16)],
)
def test_block_masks_give_tflite_block_sparse_kernels(tmp_path, quantize, block_size, block_dense_size):
    # End to end: the converter stores the pruned Dense kernels in TFLite's block format (no DENSIFY op,
    # so the sparse FULLY_CONNECTED kernels run), which it only does in the [out, in] orientation.
    from tff_sparsify import export, models

    model = models.build_model("fc", (28, 28, 1), 10)
    rng = np.random.default_rng(0)
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    for kernel in kernels:  # Same scale everywhere, so that the global ranking prunes every layer.
        kernel.assign(rng.standard_normal(kernel.shape).astype(np.float32))
    for kernel, mask in zip(kernels, magnitude_masks(kernels, 0.9, block_size=block_size)):
        kernel.assign(kernel * mask)
    path = export.to_tflite(model, str(tmp_path / "model.tflite"), quantize=quantize, sparsity=True)
    interpreter = tf.lite.Interpreter(model_path=path)
    assert "DENSIFY" not in [op["op_name"] for op in interpreter._get_ops_details()]
    sparse = [t["sparsity_parameters"] for t in interpreter.get_tensor_details()]
    sparse = [parameters for parameters in sparse if parameters]
    assert len(sparse) == 3
    for parameters in sparse:
        assert list(parameters["block_map"]) == [1]  # Blocks along TFLite's input dimension.
        assert parameters["dim_metadata"][2]["dense_size"] == block_dense_size
