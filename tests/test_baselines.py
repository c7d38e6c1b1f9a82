"""The paper's baselines (section 5) pinned down by their defining behaviour on tiny runs."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify import learning, models
from tff_sparsify.core import pruning, schedules
from tff_sparsify.algorithms import fedavg, fedprox, oneshot, random_pruning, snip_grasp

ROUNDS = 3
SCHEDULE = schedules.SparsitySchedule(final_sparsity=0.8, total_rounds=ROUNDS)


def run(process, federated, rounds=ROUNDS, initial_weights=None):
    state = process.initialize()
    if initial_weights is not None:
        state = process.set_model_weights(state, initial_weights)
    history = []
    for round_num in range(rounds):
        state = process.next(state, federated.client_datasets(round_num=round_num)).state
        history.append(process.get_model_weights(state))
    return history


def flat(tensors):
    return np.concatenate([np.ravel(t) for t in tensors])


def kernel_masks(task, weights):
    return flat(task.layout.masks(weights.non_trainable))


def test_one_shot_with_fine_tuning_is_dense_until_its_prune_round_then_exactly_s_f(task, federated):
    history = run(oneshot.build(task, 0.8, ROUNDS, fine_tune_rounds=1), federated)
    masks = [kernel_masks(task, w) for w in history]
    assert np.all(masks[0] == 1)  # Round 1: dense.
    assert np.sum(masks[1] == 0) == math.floor(0.8 * masks[1].size + 0.5)  # Round 2 = T - 1: pruned.
    np.testing.assert_array_equal(masks[2], masks[1])  # The fine-tuning round keeps the mask.
    kernels = flat(task.layout.kernels(history[2].trainable))
    np.testing.assert_array_equal(kernels == 0, masks[2] == 0)


def test_random_pruned_sets_are_nested_and_seed_determined(task, federated):
    history = run(random_pruning.build(task, SCHEDULE, seed=7), federated)
    masks = [kernel_masks(task, w) for w in history]
    for before, after in zip(masks, masks[1:]):
        assert np.all(after[before == 0] == 0)
    # The order depends on the seed only, not on the trained weights.
    shapes = [np.zeros(k.shape, np.float32) for k in task.layout.kernels(history[-1].trainable)]
    for round_num, mask in enumerate(masks, start=1):
        expected = flat(pruning.random_masks(shapes, SCHEDULE(round_num), seed=7))
        np.testing.assert_array_equal(mask, expected)
    other_seed = flat(pruning.random_masks(shapes, SCHEDULE(ROUNDS), seed=8))
    assert np.any(other_seed != masks[-1])


@pytest.fixture(scope="module")
def seeded_initial_weights(task):
    tf.keras.utils.set_random_seed(3)
    return models.initial_model_weights(task.wrapped_keras_model())


@pytest.fixture(scope="module")
def fed_prox_mu_zero(task, federated, seeded_initial_weights):
    return run(fedprox.build(task, 0.0), federated, 1, seeded_initial_weights)[-1]


def test_fed_prox_with_mu_zero_matches_fed_avg(task, federated, seeded_initial_weights, fed_prox_mu_zero):
    avg = run(fedavg.build(task), federated, 1, seeded_initial_weights)[-1]
    for a, b in zip(fed_prox_mu_zero.trainable, avg.trainable):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_fed_prox_pulls_clients_toward_the_global_model(task, federated, seeded_initial_weights, fed_prox_mu_zero):
    start = flat(seeded_initial_weights.trainable)
    strong = run(fedprox.build(task, 10.0), federated, 1, seeded_initial_weights)[-1]
    moved_free = np.linalg.norm(flat(fed_prox_mu_zero.trainable) - start)
    assert np.linalg.norm(flat(strong.trainable) - start) < 0.7 * moved_free


def test_fixed_mask_never_changes(task, federated, seeded_initial_weights):
    rng = np.random.default_rng(0)
    masks = [np.where(rng.random(m.shape) < 0.6, 0.0, 1.0).astype(np.float32)
             for m in task.layout.masks(seeded_initial_weights.non_trainable)]
    weights = type(seeded_initial_weights)(
        trainable=list(seeded_initial_weights.trainable),
        non_trainable=task.layout.replace_masks(list(seeded_initial_weights.non_trainable), masks),
    )
    process = snip_grasp.build(task, weights)
    initial = process.get_model_weights(process.initialize())
    np.testing.assert_array_equal(flat(task.layout.kernels(initial.trainable)) == 0, flat(masks) == 0)
    for trained in run(process, federated, 2):
        np.testing.assert_array_equal(kernel_masks(task, trained), flat(masks))
        np.testing.assert_array_equal(flat(task.layout.kernels(trained.trainable)) == 0, flat(masks) == 0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(final_sparsity=1.0, total_rounds=5), "final_sparsity"),
        (dict(final_sparsity=0.5, total_rounds=5, prune_round=6), "prune_round"),
        (dict(final_sparsity=0.5, total_rounds=0), "total_rounds"),
    ],
)
def test_one_shot_schedule_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        schedules.OneShotSchedule(**kwargs)


def test_fed_prox_rejects_negative_mu(task):
    with pytest.raises(ValueError, match="proximal_strength"):
        fedprox.build(task, -1.0)
