import collections
import math

import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify import compat, data, models
from tff_sparsify.core import pruning, saliency

layers = tf.keras.layers
MSE = tf.keras.losses.MeanSquaredError()


def wrapped(keras_layers, input_dim):
    return models.wrap_for_pruning(tf.keras.Sequential([layers.Input((input_dim,)), *keras_layers]))


def set_kernels(model, kernels):
    for variable, value in zip(models.prunable_weights(model), kernels):
        variable.assign(np.asarray(value, np.float32))


def as_dataset(xs, ys, batch_size):
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=xs, y=ys)).batch(batch_size)


def as_numpy(tensors):
    return [np.asarray(t) for t in tensors]


def flat(tensors):
    return np.concatenate([np.asarray(t).ravel() for t in tensors])


def assert_masks_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == tf.float32
        np.testing.assert_array_equal(a.numpy(), np.asarray(e, np.float32))


# --- A linear 2 -> 2 -> 2 network, one example, computed by hand ---------------------------------
#
# x = [1, 2], y = [0, 0], W1 = I, W2 = [[1, 0.5], [-1, 0.25]]; h = x W1 = [1, 2], o = h W2 = [-1, 1].
# Keras MSE: L = (o1^2 + o2^2) / 2, so dL/do = r = o = [-1, 1].
#   g2 = dL/dW2 = h^T r = [[-1, 1], [-2, 2]]
#   g1 = dL/dW1 = x^T (r W2^T) = x^T [-0.5, 1.25] = [[-0.5, 1.25], [-1, 2.5]]
# SNIP |g * w|: W1 [[0.5, 0], [0, 2.5]], W2 [[1, 0.5], [2, 0.5]].
# Hg = d/de grad L(w + e g) at e = 0 (D1 = g1, D2 = g2):
#   dh = x D1 = [-2.5, 6.25]; dr = dh W2 + h D2 = [-8.75, 0.3125] + [-5, 5] = [-13.75, 5.3125]
#   Hg2 = dh^T r + h^T dr = [[2.5, -2.5], [-6.25, 6.25]] + [[-13.75, 5.3125], [-27.5, 10.625]]
#       = [[-11.25, 2.8125], [-33.75, 16.875]]
#   Hg1 = x^T (dr W2^T + r D2^T) = x^T ([-11.09375, 15.078125] + [2, 4]) = x^T [-9.09375, 19.078125]
#       = [[-9.09375, 19.078125], [-18.1875, 38.15625]]
# GraSP -w * Hg: W1 [[9.09375, -0], [0, -38.15625]], W2 [[11.25, -1.40625], [-33.75, -4.21875]].
W1 = [[1.0, 0.0], [0.0, 1.0]]
W2 = [[1.0, 0.5], [-1.0, 0.25]]
SNIP_SCORES = [[[0.5, 0.0], [0.0, 2.5]], [[1.0, 0.5], [2.0, 0.5]]]
GRASP_SCORES = [[[9.09375, 0.0], [0.0, -38.15625]], [[11.25, -1.40625], [-33.75, -4.21875]]]


@pytest.fixture(scope="module")
def linear():
    model = wrapped([layers.Dense(2, use_bias=False), layers.Dense(2, use_bias=False)], 2)
    set_kernels(model, [W1, W2])
    return model


@pytest.fixture(scope="module")
def one_example():
    return as_dataset(np.array([[1.0, 2.0]], np.float32), np.zeros((1, 2), np.float32), 1)


def test_snip_scores_by_hand(linear, one_example):
    scores = saliency.snip_scores(linear, one_example, loss=MSE)
    for actual, expected in zip(scores, SNIP_SCORES):
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-6, atol=0)


def test_grasp_scores_by_hand(linear, one_example):
    scores = saliency.grasp_scores(linear, one_example, loss=MSE)
    for actual, expected in zip(scores, GRASP_SCORES):
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-6, atol=0)


# SNIP scores in flat order (W1 row-major, then W2): [0.5, 0, 0, 2.5, 1, 0.5, 2, 0.5]. Pruned in
# order: 1, 2 (the zeros), then the three 0.5 by index: 0, 5, 7; then 4 (1), 6 (2), 3 (2.5).
@pytest.mark.parametrize(
    "s,expected_w1,expected_w2",
    [
        (0.0, [[1, 1], [1, 1]], [[1, 1], [1, 1]]),
        (0.25, [[1, 0], [0, 1]], [[1, 1], [1, 1]]),
        (0.5, [[0, 0], [0, 1]], [[1, 0], [1, 1]]),  # Ties at 0.5: positions 0 and 5 go, 7 stays.
        (0.6, [[0, 0], [0, 1]], [[1, 0], [1, 0]]),  # 4.8 -> k = 5.
        (0.875, [[0, 0], [0, 1]], [[0, 0], [0, 0]]),
    ],
)
def test_snip_masks_by_hand(linear, one_example, s, expected_w1, expected_w2):
    assert_masks_equal(saliency.snip_masks(linear, one_example, s, loss=MSE), [expected_w1, expected_w2])


# GraSP scores in flat order: [9.09, -0, 0, -38.2, 11.25, -1.41, -33.75, -4.22]. Pruned highest first:
# 4 (11.25), 0 (9.09), then the tie -0 == 0 by index: 1, 2; then 5, 7, 6, 3.
@pytest.mark.parametrize(
    "s,expected_w1,expected_w2",
    [
        (0.0, [[1, 1], [1, 1]], [[1, 1], [1, 1]]),
        (0.125, [[1, 1], [1, 1]], [[0, 1], [1, 1]]),
        (0.25, [[0, 1], [1, 1]], [[0, 1], [1, 1]]),
        (0.375, [[0, 0], [1, 1]], [[0, 1], [1, 1]]),  # Tie: position 1 (-0.0) before 2 (0.0).
        (0.5, [[0, 0], [0, 1]], [[0, 1], [1, 1]]),
        (0.75, [[0, 0], [0, 1]], [[0, 0], [1, 0]]),
    ],
)
def test_grasp_masks_by_hand(linear, one_example, s, expected_w1, expected_w2):
    assert_masks_equal(saliency.grasp_masks(linear, one_example, s, loss=MSE), [expected_w1, expected_w2])


def test_ranking_is_global_not_per_layer(linear, one_example):
    # At 0.5, SNIP prunes 3 of W1's 4 weights and 1 of W2's: per layer it would be 2 and 2.
    masks = saliency.snip_masks(linear, one_example, 0.5, loss=MSE)
    assert [int(np.sum(m.numpy() == 0)) for m in masks] == [3, 1]


def test_snip_is_not_magnitude_pruning(linear, one_example):
    # |w| flat: [1, 0, 0, 1, 1, 0.5, 1, 0.25]: magnitude pruning at 0.5 drops 1, 2, 7 (0.25), 5 (0.5)
    # and keeps W1[0, 0] = 1, which SNIP drops (|g * w| = 0.5), while SNIP keeps W2[1, 1] = 0.25.
    magnitude = pruning.magnitude_masks(models.prunable_weights(linear), 0.5)
    assert_masks_equal(magnitude, [[[1, 0], [0, 1]], [[1, 0], [1, 0]]])
    snip = saliency.snip_masks(linear, one_example, 0.5, loss=MSE)
    assert not np.array_equal(flat(snip), flat(magnitude))


def test_scoring_leaves_the_model_unchanged(linear, one_example):
    before = as_numpy(linear.weights)
    for training in (False, True):
        saliency.grasp_masks(linear, one_example, 0.5, loss=MSE, training=training)
        saliency.snip_masks(linear, one_example, 0.5, loss=MSE, training=training)
        for after, value in zip(as_numpy(linear.weights), before):
            np.testing.assert_array_equal(after, value)


def test_training_mode_gives_the_same_scores_without_dropout_or_batch_norm(linear, one_example):
    for scores in (saliency.snip_scores, saliency.grasp_scores):
        inference = scores(linear, one_example, loss=MSE)
        training = scores(linear, one_example, loss=MSE, training=True)
        for a, b in zip(inference, training):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_positions_already_pruned_by_the_model_masks_stay_pruned(one_example):
    model = wrapped([layers.Dense(2, use_bias=False), layers.Dense(2, use_bias=False)], 2)
    set_kernels(model, [W1, W2])
    # W2[1, 0] is kept by both methods at 0.5 with all-ones masks (see above); a model mask that
    # prunes it keeps it pruned, and it counts towards k = 4.
    models.mask_variables(model)[1].assign([[1.0, 1.0], [0.0, 1.0]])
    for masks_fn in (saliency.snip_masks, saliency.grasp_masks):
        masks = masks_fn(model, one_example, 0.5, loss=MSE)
        assert masks[1].numpy()[1, 0] == 0
        assert int(np.sum(flat(masks) == 0)) == 4


# --- A nonlinear network, three examples in batches of 2 and 1, against float64 numpy -----------

X3 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [-1.0, 1.0, 0.75]], np.float32)
Y3 = np.array([2, 0, 1], np.int64)
V1 = np.array([[0.3, -0.7], [0.9, 0.2], [-0.4, 0.6]], np.float32)
V2 = np.array([[0.5, -1.2, 0.8], [-0.3, 0.4, 1.1]], np.float32)


def numpy_gradient(w1, w2, x, y):
    """Gradient of the mean sparse softmax cross-entropy of tanh(x w1) w2, in float64."""
    h = np.tanh(x @ w1)
    z = h @ w2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(w2.shape[1])[y]) / len(x)
    return (x.T @ ((dz @ w2.T) * (1 - h**2)), h.T @ dz)


def numpy_scores(x, y):
    """(SNIP, GraSP) scores; Hg by a central difference of the exact gradient along g."""
    w1, w2, x = V1.astype(np.float64), V2.astype(np.float64), x.astype(np.float64)
    g1, g2 = numpy_gradient(w1, w2, x, y)
    e = 1e-4
    plus = numpy_gradient(w1 + e * g1, w2 + e * g2, x, y)
    minus = numpy_gradient(w1 - e * g1, w2 - e * g2, x, y)
    hg1, hg2 = ((a - b) / (2 * e) for a, b in zip(plus, minus))
    return [np.abs(g1 * w1), np.abs(g2 * w2)], [-w1 * hg1, -w2 * hg2]


@pytest.fixture(scope="module")
def tanh_net():
    model = wrapped([layers.Dense(2, activation="tanh", use_bias=False), layers.Dense(3, use_bias=False)], 3)
    set_kernels(model, [V1, V2])
    return model


@pytest.mark.parametrize("batch_size", [2, 3])
def test_scores_of_the_mean_loss_over_all_batches(tanh_net, batch_size):
    expected_snip, expected_grasp = numpy_scores(X3, Y3)
    dataset = as_dataset(X3, Y3, batch_size)  # Batches of 2 and 1 (weighted 2/3, 1/3), or one of 3.
    for actual, expected in zip(saliency.snip_scores(tanh_net, dataset), expected_snip):
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-5, atol=1e-7)
    for actual, expected in zip(saliency.grasp_scores(tanh_net, dataset), expected_grasp):
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_num_batches_uses_only_the_first_batches(tanh_net):
    expected_snip, expected_grasp = numpy_scores(X3[:2], Y3[:2])
    dataset = as_dataset(X3, Y3, 2)
    for actual, expected in zip(saliency.snip_scores(tanh_net, dataset, num_batches=1), expected_snip):
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-5, atol=1e-7)
    for actual, expected in zip(saliency.grasp_scores(tanh_net, dataset, num_batches=1), expected_grasp):
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_more_batches_asked_than_the_dataset_has_scores_all_with_a_warning(tanh_net):
    expected_snip, _ = numpy_scores(X3, Y3)
    dataset = as_dataset(X3, Y3, 2)  # 2 batches.
    with pytest.warns(UserWarning, match="num_batches=5 but the dataset has only 2 batches"):
        scores = saliency.snip_scores(tanh_net, dataset, num_batches=5)
    for actual, expected in zip(scores, expected_snip):
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_tuple_batches_and_per_example_losses_are_accepted(tanh_net):
    expected_snip, _ = numpy_scores(X3, Y3)
    dataset = tf.data.Dataset.from_tensor_slices((X3, Y3)).batch(2)
    per_example = tf.keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=tf.keras.losses.Reduction.NONE
    )
    for actual, expected in zip(saliency.snip_scores(tanh_net, dataset, loss=per_example), expected_snip):
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_training_mode_restores_batch_norm_statistics_and_pruning_steps():
    model = wrapped([layers.Dense(4), layers.BatchNormalization(), layers.Dense(3)], 3)
    dataset = as_dataset(X3, Y3, 3)
    before = as_numpy(model.weights)
    scores = saliency.grasp_scores(model, dataset, training=True)
    assert [s.shape for s in scores] == [(3, 4), (4, 3)]
    for after, value in zip(as_numpy(model.weights), before):
        np.testing.assert_array_equal(after, value)
    steps = [v for v in model.non_trainable_weights if compat.is_pruning_step(v)]
    assert steps and all(int(v.numpy()) == -1 for v in steps)


# --- Selection -----------------------------------------------------------------------------------


def reference_order_masks(scores, s, highest):
    """Stable sort, highest (or lowest) first; the first k = floor(s * N + 0.5) are pruned."""
    values = flat(scores).astype(np.float64)
    order = np.argsort(-values if highest else values, kind="stable")
    k = int(np.floor(s * values.size + 0.5))
    mask = np.ones(values.size, np.float32)
    mask[order[:k]] = 0.0
    return np.split(mask, np.cumsum([np.size(t) for t in scores])[:-1])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("s", [0.1, 0.37, 0.5, 0.95])
def test_prune_highest_and_lowest_follow_a_stable_sort(seed, s):
    rng = np.random.default_rng(seed)
    # One decimal: many ties, across tensors and signs (and -0.0 == 0.0).
    shapes = ((3, 4, 5), (7,), (6, 6))
    scores = [np.round(rng.standard_normal(shape), 1).astype(np.float32) for shape in shapes]
    scores[1][:3] = [-0.0, 0.0, -0.0]
    expected_highest = reference_order_masks(scores, s, True)
    for actual, expected in zip(saliency.prune_highest(scores, s), expected_highest):
        np.testing.assert_array_equal(actual.numpy().ravel(), expected)
    magnitudes = [np.abs(t) for t in scores]
    expected_lowest = reference_order_masks(magnitudes, s, False)
    for actual, expected in zip(saliency.prune_lowest(magnitudes, s), expected_lowest):
        np.testing.assert_array_equal(actual.numpy().ravel(), expected)


def test_prune_highest_orders_extreme_scores_exactly():
    scores = [np.array([3e38, -3e38, 1e-45, -1e-45, 0.0, 1.0, 1.0000001, -1.0], np.float32)]
    masks = saliency.prune_highest(scores, 0.375)  # k = 3: 3e38, 1.0000001, 1.0.
    np.testing.assert_array_equal(masks[0].numpy(), [0, 1, 1, 1, 1, 0, 0, 1])


def test_prune_lowest_rejects_negative_scores():
    with pytest.raises(ValueError, match="non-negative"):
        saliency.prune_lowest([np.array([1.0, -1.0], np.float32)], 0.5)


def test_bad_arguments_are_rejected(linear, one_example):
    with pytest.raises(ValueError, match="sparsity"):
        saliency.snip_masks(linear, one_example, 1.0, loss=MSE)
    with pytest.raises(ValueError, match="num_batches"):
        saliency.grasp_masks(linear, one_example, 0.5, loss=MSE, num_batches=0)
    with pytest.raises(ValueError, match="no batches|no examples"):
        saliency.snip_scores(linear, one_example.take(0), loss=MSE)
    with pytest.raises(ValueError, match="no batches"):
        saliency.grasp_scores(linear, one_example.take(0), loss=MSE)
    plain = tf.keras.Sequential([layers.Input((2,)), layers.Dense(2)])
    with pytest.raises(ValueError, match="wrap_for_pruning"):
        saliency.snip_scores(plain, one_example, loss=MSE)


# --- The paper's FC model on one digits client ---------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return data.federate(data.load_dataset("digits"), 3)


@pytest.fixture(scope="module")
def fc(digits):
    tf.keras.utils.set_random_seed(3)
    return models.wrap_for_pruning(models.build_model("fc", (8, 8, 1), 10))


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_fc_on_one_digits_client(fc, digits, method):
    s = 0.8
    masks_fn = getattr(saliency, f"{method}_masks")
    masks = masks_fn(fc, digits.client_dataset(0), s)
    kernels = models.prunable_weights(fc)
    assert [m.shape for m in masks] == [k.shape for k in kernels]
    assert all(m.dtype == tf.float32 for m in masks)
    values = flat(masks)
    assert set(np.unique(values)) <= {0.0, 1.0}
    assert int(np.sum(values == 0)) == math.floor(s * values.size + 0.5)
    # Not magnitude pruning: the data and the gradients decide.
    magnitude = flat(pruning.magnitude_masks(kernels, s))
    assert np.sum(values != magnitude) > 0.05 * values.size
    # Deterministic: a fresh dataset of the same client gives the same mask.
    np.testing.assert_array_equal(flat(masks_fn(fc, digits.client_dataset(0), s)), values)


def test_model_weights_with_masks_for_a_fixed_mask_run(fc, digits):
    masks = saliency.snip_masks(fc, digits.client_dataset(0), 0.9, num_batches=2)
    weights = saliency.model_weights_with_masks(fc, masks)
    trainable = {v.ref(): i for i, v in enumerate(fc.trainable_weights)}
    non_trainable = {v.ref(): i for i, v in enumerate(fc.non_trainable_weights)}
    for kernel, mask_var, mask in zip(models.prunable_weights(fc), models.mask_variables(fc), masks):
        np.testing.assert_array_equal(np.asarray(weights.non_trainable[non_trainable[mask_var.ref()]]), mask)
        np.testing.assert_array_equal(
            np.asarray(weights.trainable[trainable[kernel.ref()]]), kernel.numpy() * mask.numpy()
        )
        assert np.all(mask_var.numpy() == 1)  # The model itself is untouched.
    steps = [weights.non_trainable[i] for v, i in non_trainable.items() if compat.is_pruning_step(v.deref())]
    assert steps and all(int(s) == compat.READY_PRUNING_STEP for s in steps)
