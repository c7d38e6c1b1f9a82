"""FedTiny (Huang et al., 2023) on small, hand-checked cases: the layer blocks and the adjustment
schedule, a client's top-K report, the server's prune-and-grow and its per-client mean, the held-out
server set and validation subsets, phase 0's candidates, the selection's communication, and real
TFF runs whose density stays exactly d through every adjustment."""
import collections
import dataclasses
import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import algorithms, data, experiment, learning, models
from tff_sparsify.algorithms import fedtiny
from tff_sparsify.config import ExperimentConfig
from tff_sparsify.core import prune_grow

RESNET_KERNELS = 21  # Stem, 4 + 5 + 5 + 5 stage convolutions (3 shortcuts), classifier.


def test_resnet18_blocks_are_its_stages_with_the_stem_and_classifier_at_the_ends():
    wrapped = models.wrap_for_pruning(models.build_model("resnet18", (32, 32, 3), 10))
    names = [w.layer.name for w in models.pruning_wrappers(wrapped)]
    assert len(names) == RESNET_KERNELS and names[0] == "stem" and names[-1] == "classifier"
    blocks = prune_grow.layer_blocks(names)
    assert blocks == (tuple(range(0, 5)), tuple(range(5, 10)), tuple(range(10, 15)), tuple(range(15, 21)))
    assert prune_grow.layer_blocks(names[1:])[0] == tuple(range(0, 4))  # Dense stem: not a layer here.


def test_other_models_pair_consecutive_layers_and_granularity_options():
    names = ["conv2d", "conv2d_1", "conv2d_2", "dense", "dense_1"]
    assert prune_grow.layer_blocks(names) == ((0, 1), (2, 3), (4,))
    assert prune_grow.layer_blocks(names, "entire") == ((0, 1, 2, 3, 4),)
    assert prune_grow.layer_blocks(names, "layer") == ((0,), (1,), (2,), (3,), (4,))
    with pytest.raises(ValueError, match="granularity must be block, entire or layer, got 'stage'"):
        prune_grow.layer_blocks(names, "stage")


def test_adjusting_rounds_and_their_sizes():
    # Every 2 rounds until 6, alpha 0.2, blocks (0, 1) and (2,): t = 2 adjusts block 1 (the output's),
    # t = 4 block 0, t = 6 block 1 again with alpha_6 = 0.
    schedule = prune_grow.Adjustments(2, 6, 0.2, ((0, 1), (2,)))
    assert [bool(schedule.adjusting(t)) for t in range(9)] == [False, False, True, False, True, False, True,
                                                               False, False]
    masks = [np.ones(30, np.float32), np.ones(50, np.float32), np.ones(10, np.float32)]
    sizes = lambda t: [int(k) for k in schedule.sizes(t, masks)]  # noqa: E731
    alpha_2 = 0.1 * (1 + math.cos(math.pi * 2 / 6))  # 0.15.
    assert sizes(2) == [0, 0, math.ceil(alpha_2 * 10)] == [0, 0, 2]
    alpha_4 = 0.1 * (1 + math.cos(math.pi * 4 / 6))  # 0.05.
    assert sizes(4) == [math.ceil(alpha_4 * 30), math.ceil(alpha_4 * 50), 0] == [2, 3, 0]
    assert sizes(6) == [0, 0, 0] and sizes(3) == [0, 0, 0] and sizes(8) == [0, 0, 0]


def test_a_clients_report_is_the_top_k_of_its_last_gradient_at_inactive_positions_of_the_block():
    schedule = prune_grow.Adjustments(1, 10, 0.5, ((0,), (1,)))  # t = 1 adjusts layer 1.
    report = learning.TopKGradients(schedule)
    masks = [np.float32([1, 0, 0, 1]), np.float32([1, 1, 0, 0, 0, 1])]  # Layer 1: nnz 3.
    first = [np.float32([5, 5, 5, 5]), np.float32([9, 9, 9, 9, 9, 9])]
    last = [np.float32([1, -7, 2, 0]), np.float32([8, 0, -0.4, 0.3, 0.1, 6])]
    held = report.accumulate(report.accumulate(report.initial(masks), first), last)
    k = math.ceil(0.25 * (1 + math.cos(math.pi / 10)) * 3)  # alpha_1 nnz = 1.48: 2 entries.
    sent, params, size = report.finish(tf.constant(1), held, masks)
    np.testing.assert_array_equal(sent[0], np.zeros(4))  # Not in the block.
    np.testing.assert_array_equal(sent[1], np.float32([0, 0, -0.4, 0.3, 0, 0]))  # Active 8 and 6 never.
    assert k == 2 and int(params) == 2 and int(size) == 2 * 8  # An int32 index and a float32 each.
    sent, params, _ = report.finish(tf.constant(2), held, masks)  # t = 2 adjusts layer 0; K = 1.
    np.testing.assert_array_equal(sent[0], np.float32([0, -7, 0, 0]))
    assert int(params) == 1


def test_server_prunes_the_smallest_and_grows_the_largest_mean_gradient_in_the_selected_block():
    schedule = prune_grow.Adjustments(1, 10, 1.0, ((0,), (1,)))
    update = PruneAndGrowCase()
    masks, target = learning.PruneAndGrow(schedule, 0.5)(
        tf.constant(2), update.kernels, update.masks, {"top_k_gradients": update.gradients}, None)
    # Round 2 ended, so t = 1 adjusted layer 1 (the last block), nnz 2: K = ceil(alpha_1 2) = 2.
    np.testing.assert_array_equal(masks[0], update.masks[0])
    k = math.ceil(0.5 * (1 + math.cos(math.pi / 10)) * 2)
    assert k == 2
    np.testing.assert_array_equal(masks[1], np.float32([0, 0, 1, 0, 1]))  # 0.1, -0.2 pruned; 0.9, -0.8 grown.
    assert float(target) == 0.5
    kept, _ = learning.PruneAndGrow(schedule, 0.5)(
        tf.constant(1), update.kernels, update.masks, {"top_k_gradients": update.gradients}, None)
    np.testing.assert_array_equal(kept[1], update.masks[1])  # Round 1 did not adjust.


class PruneAndGrowCase:
    kernels = [np.float32([3, 0, 2]), np.float32([0.1, -0.2, 0, 0, 0])]
    masks = [np.float32([1, 0, 1]), np.float32([1, 1, 0, 0, 0])]
    gradients = [np.float32([0, 4, 0]), np.float32([0, 0, 0.9, 0.1, -0.8])]


def test_reports_are_averaged_per_client_and_the_model_per_example():
    value_type = tff.types.to_type(collections.OrderedDict(
        weights=[np.float32], top_k_gradients=[np.float32]))
    factory = learning.MeanPerClientFields(("top_k_gradients",))
    process = factory.create(value_type, tff.TensorType(np.float32))
    values = [collections.OrderedDict(weights=[np.float32(w)], top_k_gradients=[np.float32(g)])
              for w, g in ((1, 3), (4, 0), (100, 100))]
    output = process.next(process.initialize(), values, [1.0, 3.0, 0.0])  # The third client is left out.
    assert float(output.result["weights"][0]) == pytest.approx((1 * 1 + 3 * 4) / 4)
    assert float(output.result["top_k_gradients"][0]) == pytest.approx((3 + 0) / 2)
    assert list(output.result) == ["weights", "top_k_gradients"]


def test_the_server_set_is_the_last_examples_of_each_class_held_out():
    x = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1)
    y = np.int64([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    dataset = data.from_arrays(x, y, x[:2], y[:2])
    server, rest = dataset.hold_out_last_per_class(2)
    assert server.x_train.ravel().tolist() == [8, 9, 10, 11]
    assert rest.x_train.ravel().tolist() == list(range(8)) and len(rest.y_test) == 2
    with pytest.raises(ValueError, match=r"server_examples_per_class must be an integer in \[1, 5\]"):
        dataset.hold_out_last_per_class(6)


def test_validation_subsets_are_a_seeded_tenth_of_each_client():
    federated = data.federate(data.load_dataset("digits"), 3, seed=7)
    sizes = [len(i) for i in federated.partition.client_indices]
    batches = [list(federated.validation_dataset(c, 0.1)) for c in range(3)]
    assert [sum(len(b["y"]) for b in c) for c in batches] == [math.floor(0.1 * n) for n in sizes]
    again = list(federated.validation_dataset(0, 0.1))
    np.testing.assert_array_equal(again[0]["x"], batches[0][0]["x"])


def test_fedtiny_needs_server_examples_and_holds_out_five_by_default():
    assert ExperimentConfig(algorithm="fedtiny").server_examples == 5
    assert ExperimentConfig(algorithm="fedavg").server_examples == 0
    assert ExperimentConfig(algorithm="fedavg", server_examples_per_class=5).server_examples == 5
    with pytest.raises(ValueError, match="server_examples_per_class must be >= 1 for fedtiny"):
        ExperimentConfig(algorithm="fedtiny", server_examples_per_class=0)
    with pytest.raises(ValueError, match="granularity must be one of"):
        ExperimentConfig(algorithm="fedtiny", options={"granularity": "stage"})


def test_candidates_keep_the_stem_dense_and_the_rest_at_density_d():
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=(3, 3, 1, 8)).astype(np.float32), rng.normal(size=(3, 3, 8, 16)).astype(np.float32),
               rng.normal(size=(400, 10)).astype(np.float32)]
    candidates = fedtiny.coarse_candidates(kernels, 0.05, 3, dense_stem=True, seed=1)
    assert len(candidates) == 3
    for masks in candidates:
        assert masks[0].all()
        kept = sum(int(m.sum()) for m in masks[1:])
        assert abs(kept / (1152 + 4000) - 0.05) <= 0.02 * 0.05
        for mask, kernel in zip(masks[1:], kernels[1:]):  # Each layer keeps its largest |w|.
            assert np.abs(kernel[mask == 1]).min() >= np.abs(kernel[mask == 0]).max()
    assert any(not np.array_equal(a[2], b[2]) for a, b in zip(candidates, candidates[1:]))


def tiny_bn_cnn(input_shape=(8, 8, 1), num_classes=10):
    layers = tf.keras.layers
    return tf.keras.Sequential([
        layers.Input(input_shape), layers.Conv2D(4, 3, padding="same"), layers.BatchNormalization(),
        layers.ReLU(), layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(), layers.Flatten(), layers.Dense(16, activation="relu"), layers.Dense(num_classes),
    ])


@pytest.fixture(scope="module")
def tiny_setup():
    dataset = data.load_dataset("digits")
    server, rest = dataset.hold_out_last_per_class(5)
    federated = data.federate(rest, 3, seed=3)
    federated = data.FederatedData(federated.dataset, federated.partition, 32, 3, server=server)
    task = learning.ModelTask(tiny_bn_cnn, federated.element_spec)
    config = ExperimentConfig(algorithm="fedtiny", num_clients=3, options=dict(
        final_sparsity=0.9, candidates=3, recalibration_epochs=2, adjust_every=1, adjust_until=4,
        adjust_fraction=0.5))
    return algorithms.Setup(config, task, federated)


def test_three_rounds_keep_each_layers_nnz_and_density_d_through_every_adjustment(tiny_setup):
    setup, layout = tiny_setup, tiny_setup.task.layout
    tf.keras.utils.set_random_seed(0)
    weights = fedtiny._initial_weights(setup)
    adjustments = fedtiny.adjustments(setup)
    assert adjustments.blocks == ((1, 2), (3,))  # The stem (layer 0) stays dense.
    process = fedtiny.build(setup.task, weights, 0.9, adjustments, **setup.optimizers())
    state = process.set_model_weights(process.initialize(), weights)
    masks = [np.asarray(m) for m in layout.masks(weights.non_trainable)]
    assert masks[0].all()
    nnz = [int(m.sum()) for m in masks[1:]]
    assert abs(sum(nnz) / sum(m.size for m in masks[1:]) - 0.1) <= 0.02 * 0.1
    changed_layers = []
    for round_num in (1, 2, 3):
        output = process.next(state, setup.federated.client_datasets(round_num=round_num))
        state = output.state
        new = process.get_model_weights(state)
        new_masks = [np.asarray(m) for m in layout.masks(new.non_trainable)]
        assert [int(m.sum()) for m in new_masks[1:]] == nnz and new_masks[0].all()
        changed = [i for i, (a, b) in enumerate(zip(masks, new_masks)) if not np.array_equal(a, b)]
        for i in changed:  # Grown weights start at 0; pruned ones are 0.
            kernel = np.asarray(layout.kernels(new.trainable)[i])
            assert (kernel[(new_masks[i] == 1) & (masks[i] == 0)] == 0).all()
            assert (kernel[new_masks[i] == 0] == 0).all()
        changed_layers.append(changed)
        reported = int(output.metrics["client_work"]["communication"]["report_params"])
        assert (reported > 0) == (round_num > 1)  # Rounds 2 and 3 adjust (t = 1, 2).
        masks = new_masks
    # Round 2 (t = 1) adjusts the last block (layer 3), round 3 (t = 2) the one before (layers 1, 2).
    assert changed_layers[0] == [] and changed_layers[1] == [3] and set(changed_layers[2]) <= {1, 2}
    assert changed_layers[2]


def test_selection_cost_counts_both_exchanges(tiny_setup):
    cost = fedtiny.selection_cost(tiny_setup)
    model = tiny_setup.task.wrapped_keras_model()
    statistics = 2 * (4 + 8)  # Two BatchNorm layers' moving mean and variance.
    params = sum(int(np.prod(v.shape)) for v in model.trainable_weights) + statistics
    # Exchange A: the dense model and 3 density vectors of 3 layers down, 3 x (statistics + count) up;
    # exchange B: 3 x statistics down, 3 x (loss, count) up; for each of 3 clients.
    assert cost.download_params == 3 * (params + 3 * (3 + statistics))
    assert cost.upload_params == 3 * (3 * (statistics + 1) + 3 * 2)
    assert cost.bytes == 4 * cost.params


def test_fedtiny_runs_end_to_end_with_its_selection_counted(tmp_path):
    config = ExperimentConfig.from_dict(dict(
        algorithm="fedtiny", model="cnn", rounds=3, local_epochs=1, num_clients=3, final_sparsity=0.95,
        candidates=2, recalibration_epochs=1, adjust_every=1, adjust_until=3))
    summary = experiment.run(config, str(tmp_path), progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert summary["completed"] and summary["communication"]["setup_params"] > 0
    rounds = sum(r["communication"]["download_params"] + r["communication"]["upload_params"] for r in history)
    assert summary["communication"]["params"] == summary["communication"]["setup_params"] + rounds
    assert [r["report_params"] > 0 for r in history] == [False, True, True]
    assert history[-1]["target_sparsity"] == 0.95
    assert len({r["communication"]["download_params"] for r in history}) == 1  # The kept positions stay.


def test_a_resumed_run_takes_its_mask_from_the_checkpoint_and_ends_as_the_uninterrupted_one(tmp_path, monkeypatch):
    config = ExperimentConfig.from_dict(dict(
        algorithm="fedtiny", model="cnn", rounds=2, local_epochs=1, num_clients=3, final_sparsity=0.95,
        candidates=1, recalibration_epochs=1, adjust_every=1, adjust_until=2))  # 1: no near tie to flip.
    uninterrupted = experiment.run(config, str(tmp_path / "a"), progress=False)
    experiment.run(config, str(tmp_path / "b"), progress=False, stop_after=1)

    def must_not_select_again(setup):
        raise AssertionError("a resumed run selected its mask again")

    get = algorithms.get
    monkeypatch.setattr(algorithms, "get", lambda name: dataclasses.replace(get(name), initial_weights=must_not_select_again))
    resumed = experiment.run(config, str(tmp_path / "b"), progress=False)
    rows = [json.loads((tmp_path / d / "history.json").read_text()) for d in ("a", "b")]

    def mask_counts(row):  # Set by the mask alone.
        return row["sparsity"], row["communication"]["download_params"], row["report_params"]

    assert [mask_counts(r) for r in rows[1]] == [mask_counts(r) for r in rows[0]]
    # Two runs of the convolutional model differ in float rounding (a bias may land on 0 in one).
    for measured in ("test_accuracy", "train_loss", "nonzero_params"):
        assert [r[measured] for r in rows[1]] == pytest.approx([r[measured] for r in rows[0]], rel=1e-3)
    assert resumed["communication"]["params"] == pytest.approx(uninterrupted["communication"]["params"], rel=1e-4)
