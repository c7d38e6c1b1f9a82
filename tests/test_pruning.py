import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify.pruning import apply_masks, count_nonzero, magnitude_masks, sparsity

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
