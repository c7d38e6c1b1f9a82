"""End-to-end runs of the FedSparsify and FedAvg learning processes on tiny data."""
import math

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_sparsify import learning, models, optimizers
from tff_sparsify.core import schedules
from tff_sparsify.learning.client_work import build_masked_client_work
from tff_sparsify.algorithms import fedavg, fedsparsify_global, fedsparsify_local

ROUNDS = 3
SCHEDULE = schedules.SparsitySchedule(final_sparsity=0.8, total_rounds=ROUNDS)


def run(process, federated, rounds=ROUNDS):
    """Runs `rounds` rounds; returns the model weights after each round and the metrics."""
    state, history = process.initialize(), []
    for round_num in range(rounds):
        output = process.next(state, federated.client_datasets(round_num=round_num))
        state = output.state
        history.append((process.get_model_weights(state), output.metrics))
    return history


def kernels_and_masks(task, weights):
    flat = lambda tensors: np.concatenate([np.ravel(t) for t in tensors])  # noqa: E731
    return flat(task.layout.kernels(weights.trainable)), flat(task.layout.masks(weights.non_trainable))


@pytest.fixture(scope="module")
def global_history(task, federated):
    return run(fedsparsify_global.build(task, SCHEDULE), federated)


def test_global_reaches_each_rounds_target_exactly(task, global_history):
    for round_num, (weights, metrics) in enumerate(global_history, start=1):
        kernels, masks = kernels_and_masks(task, weights)
        expected_zeros = math.floor(SCHEDULE(round_num) * kernels.size + 0.5)
        assert np.sum(masks == 0) == expected_zeros
        assert np.sum(kernels == 0) == expected_zeros  # Pruned kernels are exactly zero, the rest not.
        np.testing.assert_array_equal(kernels == 0, masks == 0)
        assert metrics["finalizer"]["target_sparsity"] == pytest.approx(SCHEDULE(round_num))
        assert metrics["finalizer"]["sparsity"] == pytest.approx(expected_zeros / kernels.size)
    assert global_history[-1][1]["finalizer"]["sparsity"] == pytest.approx(0.8, abs=1e-4)


def test_global_never_regrows_pruned_weights(task, global_history):
    pruned_before = None
    for weights, _ in global_history:
        _, masks = kernels_and_masks(task, weights)
        if pruned_before is not None:
            assert np.all(masks[pruned_before] == 0)
        pruned_before = masks == 0


@pytest.mark.parametrize(
    "optimizer_fn",
    [lambda: tff.learning.optimizers.build_sgdm(0.1), lambda: optimizers.build_nesterov_sgdm(0.1, 0.9)],
    ids=["sgd", "nesterov"],
)
def test_clients_train_only_unpruned_weights(task, federated, optimizer_fn):
    client_work = build_masked_client_work(task, optimizer_fn())
    weights = models.initial_model_weights(task.wrapped_keras_model())
    rng = np.random.default_rng(0)
    masks = [np.where(rng.random(m.shape) < 0.5, 0.0, 1.0).astype(np.float32) for m in task.layout.masks(weights.non_trainable)]
    kernels = [k.numpy() * m for k, m in zip(task.layout.kernels(weights.trainable), masks)]
    weights = tff.learning.models.ModelWeights(
        trainable=task.layout.replace_kernels([w.numpy() for w in weights.trainable], kernels),
        non_trainable=task.layout.replace_masks([w.numpy() for w in weights.non_trainable], masks),
    )
    output = client_work.next(client_work.initialize(), [weights] * 2, federated.client_datasets([0, 1]))
    for result in output.result:
        for update, mask in zip(task.layout.kernels(result.update["weights"]), masks):
            assert np.all(update[mask == 0] == 0.0)
            assert np.mean(update[mask == 1] != 0.0) > 0.5


def test_local_masks_follow_the_majority_vote(task, federated):
    process = fedsparsify_local.build(task, SCHEDULE)
    hooks = learning.ClientHooks(after_training=learning.LocalPruning(SCHEDULE))
    client_work = build_masked_client_work(task, tff.learning.optimizers.build_sgdm(0.02), hooks)
    state = process.initialize()
    state = process.next(state, federated.client_datasets(round_num=0)).state
    # Replay round 2's client work alone from the same model, then vote by hand (paper eq. 2).
    weights = process.get_model_weights(state)
    rounds_done = 1  # The client work's state: clients prune to s(rounds_done + 1).
    replay = client_work.next(rounds_done, [weights] * 3, federated.client_datasets(round_num=1))
    output = process.next(state, federated.client_datasets(round_num=1))

    client_masks = np.stack(
        [np.concatenate([np.ravel(m) for m in task.layout.kernels(r.update["masks"])]) for r in replay.result]
    )
    voted = (client_masks.mean(axis=0) >= 0.5).astype(np.float32)
    _, merged = kernels_and_masks(task, process.get_model_weights(output.state))
    np.testing.assert_array_equal(merged, voted)
    # Clients disagree on some positions, so the vote is not just one client's mask.
    assert np.any(client_masks.min(axis=0) != client_masks.max(axis=0))
    realized = output.metrics["finalizer"]["sparsity"]
    assert realized == pytest.approx(np.mean(voted == 0))


def test_fed_avg_leaves_the_model_dense(task, federated):
    history = run(fedavg.build(task), federated, rounds=2)
    for weights, metrics in history:
        kernels, masks = kernels_and_masks(task, weights)
        assert np.all(masks == 1) and np.all(kernels != 0)
        assert metrics["finalizer"]["sparsity"] == 0


def test_global_block_pruning_zeroes_whole_blocks_at_the_target(task, federated):
    history = run(fedsparsify_global.build(task, SCHEDULE, block_size=(1, 4)), federated, rounds=2)
    weights, metrics = history[-1]
    kernels = task.layout.kernels(weights.trainable)
    total = sum(k.size for k in kernels)
    zeros = sum(int(np.sum(k == 0)) for k in kernels)
    target = math.floor(SCHEDULE(2) * total + 0.5)
    assert target <= zeros < target + 4  # The fewest whole blocks reaching the target.
    for kernel in kernels:  # Keras [in, out]: a 1x4 block is 4 consecutive inputs of one output.
        blocks = (kernel == 0).reshape(kernel.shape[0] // 4, 4, kernel.shape[1])
        assert np.all(blocks.all(axis=1) == blocks.any(axis=1))
