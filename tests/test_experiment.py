"""The experiment runner and the `tff-sparsify` command line."""
import csv
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify import cli, experiment
from tff_sparsify.learning import batch_norm

from conftest import TINY_CONFIG

TINY = experiment.ExperimentConfig.from_dict(TINY_CONFIG)


def test_interrupted_run_resumes_from_its_last_round(resumed_run):
    output_dir, first, second, rows_seen = resumed_run
    assert first["rounds_completed"] == 2 and not first["completed"]
    assert [row["round"] for row in rows_seen] == [3]
    assert second["completed"] and second["rounds_completed"] == 3
    with open(f"{output_dir}/history.json") as f:
        history = json.load(f)
    with open(f"{output_dir}/history.csv") as f:
        assert [int(r["round"]) for r in csv.DictReader(f)] == [1, 2, 3]
    # The resumed round continued from the checkpointed (sparser) model.
    assert [r["target_sparsity"] for r in history] == pytest.approx([TINY.options.schedule(TINY.rounds)(t) for t in (1, 2, 3)])
    assert history[-1]["sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert 0.0 <= second["final_test_accuracy"] <= 1.0
    assert second["mean_test_accuracy_last_10"] == pytest.approx(np.mean([r["test_accuracy"] for r in history]))


def test_final_model_is_stripped_and_exactly_sparse(resumed_run):
    output_dir, *_ = resumed_run
    model = tf.keras.models.load_model(f"{output_dir}/final_model.keras")
    kernels = np.concatenate([w.numpy().ravel() for w in model.weights if "kernel" in w.name])
    assert not any("prune_low_magnitude" in layer.name for layer in model.layers)
    assert np.sum(kernels == 0) == math.floor(0.8 * kernels.size + 0.5)


def test_other_config_in_same_directory_is_refused(resumed_run):
    output_dir, *_ = resumed_run
    with pytest.raises(ValueError, match="different config.*final_sparsity"):
        experiment.run(experiment.ExperimentConfig.from_dict({**TINY.to_dict(), "final_sparsity": 0.5}), output_dir)


def test_a_data_path_spelled_otherwise_resumes_but_another_file_is_refused(tmp_path, monkeypatch):
    for name in ("a.npz", "b.npz"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    config = lambda path: experiment.ExperimentConfig(dataset="fashion_mnist", data_path=path)  # noqa: E731
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(config("a.npz").to_dict()))  # As a run saves it,
    (tmp_path / "run" / "checkpoint.npz").write_bytes(b"")  # with a round done.
    experiment._check_same_config(config(str(tmp_path / "a.npz")), str(tmp_path / "run"))
    experiment._check_same_config(config("./a.npz"), str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"different config \(data_path\)"):
        experiment._check_same_config(config("b.npz"), str(tmp_path / "run"))


def test_partial_participation_samples_seeded_subsets():
    config = experiment.ExperimentConfig(num_clients=100, participation=0.1)
    assert config.clients_per_round == 10
    assert experiment.sample_clients(config, 5) == experiment.sample_clients(config, 5)
    assert experiment.sample_clients(config, 5) != experiment.sample_clients(config, 6)
    assert experiment.sample_clients(TINY, 1) == [0, 1, 2]


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["run", "--final-sparsity", "1.0"], "--final-sparsity must be in [0, 1)"),
        (["run", "--algorithm", "lottery"], "--algorithm must be one of"),
        (["run", "--dataset", "mnist"], "--dataset must be one of"),
        (["run", "--rounds", "10", "--start-round", "10"], "--start-round must be an integer in [1, 9]"),
        (["run", "--participation", "0"], "--participation must be in (0, 1]"),
        (["run", "--num-clients", "0"], "--num-clients must be an integer >= 1"),
        (["run", "--stop-after", "0"], "--stop-after must be an integer >= 1"),
        (["run", "--block-size", "4"], "--block-size must look like 1x4"),
        (["run", "--client-nesterov"], "--client-nesterov needs client_momentum in (0, 1)"),
        (["run", "--rounds", "1"], "--rounds must be an integer >= 2"),  # Not the schedule's total_rounds.
        (["run", "--client-learning-rate", "inf"], "--client-learning-rate must be a finite number, got inf"),
        (["run", "--seed", "-1"], "--seed must be an integer in [0, 2**32 - 1]"),
        (["run", "--seed", "4294967296"], "--seed must be an integer in [0, 2**32 - 1]"),
        (["run", "--algorithm", "fedsparsify_local", "--quorum", "5"], "--quorum must be in (0, 1]"),
        (["run", "--algorithm", "grasp", "--block-size", "1x4"], "--block-size applies to fedsparsify_global"),
        (["run", "--model", "vgg16"], "--model 'vgg16' does not fit the digits inputs of shape 8x8x1"),
        (["run", "--data-path", "nope.npz", "--dataset", "fashion_mnist"], "--data-path 'nope.npz': no such file"),
        (["bench", "model.tflite", "--batch-size", "0"], "--batch-size: must be an integer >= 1, got '0'"),
        (["run", "--alpha", "0.5"], "--alpha applies to partition dirichlet only, got 0.5 with partition 'iid'"),
        (["run", "--classes-per-client", "2"], "--classes-per-client applies to partition label_skew or"),
        (["run", "--partition", "dirichlet"], "--alpha is required for partition 'dirichlet'"),
        (["run", "--partition", "dirichlet", "--alpha", "1e-30"], "--alpha must be a finite number >= 0.001"),
        (["run", "--partition", "pathological"], "--partition must be one of"),
        (["run", "--quorum", "0.7"], "--quorum applies to fedsparsify_local only"),
        (["run", "--output-dir", ""], "--output-dir must name a directory, got ''"),
        (["run", "--config", "missing.json"], "--config 'missing.json': no such file"),
        (["compare", "--algorithms", "fedavg,fedavg"], "--algorithms names an algorithm twice"),
        (["export", "no_such_run"], "RUN_DIR 'no_such_run': no such directory"),
        (["export", ".", "--quantize", "int4"], "argument --quantize: invalid choice: 'int4'"),
        (["bench", "no_such.tflite"], "TFLITE 'no_such.tflite': no such file"),
        (["table", "no_such_run"], "RUN_DIRS 'no_such_run': no such directory"),
        (["table", ".", "--runtime", "bogus"], "argument --runtime: invalid choice: 'bogus'"),
        (["run", "--rounds", "3", "--bogus"], "unrecognized arguments: --bogus"),
        (["compare", "--algorithms", "fedavg,fedprox", "--quorum", "0.7"],
         "--quorum applies to fedsparsify_local only, none of --algorithms fedavg,fedprox"),
        (["grid", "list", "--override", "quorum=0.7", "fashion_mnist_noniid2/fedavg"],
         "--override quorum=...: quorum applies to fedsparsify_local only, none of the selected cells"),
        (["bench", "."], "TFLITE '.': a directory"),
        (["run", "--recalibrate-batch-norm"], "--recalibrate-batch-norm needs a model with BatchNorm layers; "
                                              "model 'fc' has none"),
    ],
)
def test_bad_flags_get_a_one_line_error_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]


def test_a_file_where_a_directory_or_a_model_belongs_is_named(tmp_path, capsys):
    not_a_model, a_file = tmp_path / "fake.tflite", tmp_path / "results"
    not_a_model.write_bytes(b"just some bytes")
    a_file.write_text("")
    for argv, message in [
        (["bench", str(not_a_model)], f"TFLITE {str(not_a_model)!r}: not a .tflite model"),
        (["run", "--output-dir", str(a_file)], f"--output-dir must name a directory, got {str(a_file)!r} (an existing file)"),
        (["run", "--dataset", "fashion_mnist", "--data-path", str(tmp_path)], f"--data-path {str(tmp_path)!r}: a directory"),
        (["export", str(tmp_path)], f"RUN_DIR {str(tmp_path)!r} holds no finished run; run or resume it with"),
    ]:
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert message in capsys.readouterr().err.strip()


def test_argument_errors_answer_before_tensorflow_loads():
    """Every command checks its arguments before importing TensorFlow (an error answers in < 1 s)."""
    script = textwrap.dedent("""
        import sys
        from tff_sparsify import cli
        for argv in (["run", "--rounds", "1"], ["run", "--output-dir", "/dev/null"], ["export", "nowhere"],
                     ["bench", "none.tflite"], ["table", "nowhere"], ["grid", "run", "nothing/*"],
                     ["compare", "--algorithms", "fedavg,oops"]):
            try:
                cli.main(argv)
            except SystemExit as exit:
                assert exit.code == 2, argv
            assert "tensorflow" not in sys.modules, argv
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def test_compare_takes_each_algorithms_own_options():
    args = cli._parser().parse_args(["compare", "--algorithms", "fedsparsify_local,fedavg", "--quorum", "0.7"])
    assert cli._config(args, algorithm="fedsparsify_local").options.quorum == 0.7
    assert not hasattr(cli._config(args, algorithm="fedavg").options, "quorum")


def test_grid_cell_patterns_may_follow_options(tmp_path, capsys):
    assert cli.main(["grid", "list", "--runs-dir", str(tmp_path), "fashion_mnist_noniid2/global_0.9",
                     "fashion_mnist_noniid2/fedavg"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["fashion_mnist_noniid2/fedavg", "fashion_mnist_noniid2/global_0.9"]


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"batch_size": "32"}', "batch_size must be an integer, got '32'"),
        ('{"local_epochs": 1.5}', "local_epochs must be an integer, got 1.5"),
        ('{"client_nesterov": "false"}', "client_nesterov must be true or false, got 'false'"),
        ('{"rounds": 3,,}', "not valid JSON (Expecting property name"),
        ("[1, 2]", "expected a JSON object of config fields"),
    ],
)
def test_config_file_errors_name_the_file_and_key(tmp_path, capsys, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(SystemExit):
        cli.main(["run", "--config", str(path), "--output-dir", str(tmp_path / "run")])
    assert f"--config {str(path)!r}: {message}" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_a_data_path_from_the_config_file_is_named_with_the_file(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"dataset": "fashion_mnist", "data_path": "gone.npz"}))
    with pytest.raises(SystemExit):
        cli.main(["run", "--config", str(path)])
    assert capsys.readouterr().err.strip() == (
        f"tff-sparsify run: error: --config {str(path)!r}: data_path 'gone.npz': no such file")


def test_config_file_and_flags_combine(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"rounds": 50, "final_sparsity": 0.9, "algorithm": "fedsparsify_local"}))
    args = cli._parser().parse_args(["run", "--config", str(path), "--final-sparsity", "0.95"])
    config = cli._config(args)
    assert (config.rounds, config.final_sparsity, config.algorithm) == (50, 0.95, "fedsparsify_local")
    assert not config.client_nesterov
    nesterov = cli._config(cli._parser().parse_args(["run", "--client-momentum", "0.9", "--client-nesterov"]))
    assert nesterov.client_nesterov and nesterov.client_momentum == 0.9
    path.write_text(json.dumps({"rounds": 5, "sparsity": 0.9}))
    with pytest.raises(ValueError, match="unknown fields"):
        cli._config(cli._parser().parse_args(["run", "--config", str(path)]))


def test_communication_cost_follows_the_papers_accounting(resumed_run):
    output_dir, _, summary, _ = resumed_run
    with open(f"{output_dir}/history.json") as f:
        history = json.load(f)
    for previous, row in zip(history, history[1:]):
        cost = row["communication"]
        # Download: each of the 3 clients receives the model as the previous round left it: the
        # 26,122 parameters but the kernel positions pruned (of 25,856), zero-valued biases included.
        pruned = round(previous["sparsity"] * 25_856)
        assert cost["download_params"] == 3 * (26_122 - pruned)
        # Global: clients train within the broadcast mask and upload their model: as many parameters
        # as they received (the server prunes after). The delta's nonzeros are fewer, reported apart.
        assert cost["upload_params"] == cost["download_params"]
        assert 0 < row["update_nonzero"] <= cost["upload_params"]
        assert cost["mask_bits"] == 0
        assert row["mbit"] == pytest.approx((cost["download_params"] + cost["upload_params"]) * 32 / 1e6)
        assert cost["upload_bytes"] <= 3 * 4 * 26_122  # Never more than dense float32.
    # After round 2 the model is about 56% sparse: its sparse encoding beats dense float32.
    assert history[2]["communication"]["download_bytes"] < 0.8 * 3 * 4 * 26_122
    total = sum(r["communication"]["download_params"] + r["communication"]["upload_params"] for r in history)
    assert summary["communication"]["params"] == total
    assert history[-1]["cumulative_mbit"] == pytest.approx(summary["communication"]["mbit"])
    dense = 2 * 3 * 3 * 26_122  # clients x 2 directions x rounds x parameters of the 64-128-128-10 model
    assert summary["communication"]["dense_fedavg_params"] == dense
    assert summary["communication"]["times_less_than_dense_fedavg"] == pytest.approx(dense / total)


def test_same_config_same_results(resumed_run, tmp_path):
    output_dir, *_ = resumed_run
    experiment.run(TINY, str(tmp_path), progress=False)
    with open(f"{output_dir}/history.json") as f, open(tmp_path / "history.json") as g:
        first, second = json.load(f), json.load(g)
    for a, b in zip(first, second):
        assert a["nonzero_params"] == b["nonzero_params"]
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_snip_run_trains_within_its_initial_mask(tmp_path):
    config = experiment.ExperimentConfig.from_dict({**TINY_CONFIG, "algorithm": "snip", "rounds": 2})
    experiment.run(config, str(tmp_path), progress=False)
    with open(tmp_path / "history.json") as f:
        history = json.load(f)
    kernels = 64 * 128 + 128 * 128 + 128 * 10
    for row in history:  # Sparse at s_f from the first round on; the mask never changes.
        assert row["sparsity"] == pytest.approx(math.floor(0.8 * kernels + 0.5) / kernels)
        assert row["target_sparsity"] is None
    task, weights = experiment.initial_weights(config)  # The masks the run started from, rebuilt.
    masks = [np.asarray(m) for m in task.layout.masks(weights.non_trainable)]
    assert sum(np.count_nonzero(m) for m in masks) == kernels - math.floor(0.8 * kernels + 0.5)
    trained = tf.keras.models.load_model(tmp_path / "final_model.keras", compile=False)
    trained_kernels = [layer.kernel.numpy() for layer in trained.layers if hasattr(layer, "kernel")]
    assert [k.shape for k in trained_kernels] == [m.shape for m in masks]
    for kernel, mask in zip(trained_kernels, masks):
        assert np.all(kernel[mask == 0] == 0) and np.count_nonzero(kernel[mask == 1]) > 0.9 * mask.sum()


def test_a_recalibrated_run_ships_and_reports_the_clients_recalibrated_batch_norm_statistics(tmp_path, monkeypatch):
    config = experiment.ExperimentConfig.from_dict({**TINY_CONFIG, "model": "cnn", "rounds": 2,
                                                    "recalibrate_batch_norm": True})
    final = []  # The weights after the last round, as the recalibration receives them.
    recalibrate = batch_norm.recalibrate
    monkeypatch.setattr(batch_norm, "recalibrate", lambda *args: final.append(args[2]) or recalibrate(*args))
    summary = experiment.run(config, str(tmp_path), progress=False)
    recalibration, communication = summary["batch_norm_recalibration"], summary["communication"]
    history = json.loads((tmp_path / "history.json").read_text())
    rounds = sum(r["communication"]["download_params"] + r["communication"]["upload_params"] for r in history)
    assert communication["params"] == rounds + communication["recalibration_params"]
    assert communication["recalibration_params"] == (recalibration["communication"]["download_params"]
                                                     + recalibration["communication"]["upload_params"])
    # Each of the 3 clients returns the statistics (the CNN's 384: 2 x (64 + 128) channels) and its count.
    assert recalibration["communication"]["upload_params"] == 3 * (384 + 1)
    # The statistics are the clients' own at the final weights: in Keras, each client's batches in
    # training mode (momentum 0: a moving statistic is then the batch's), weighted by their examples,
    # then the clients' example-weighted mean.
    task, _ = experiment.initial_weights(config)
    reference = task.sparse_keras_model(final[0])
    shipped = tf.keras.models.load_model(tmp_path / "final_model.keras")
    norms = [layer for layer in reference.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    averaged = [layer.moving_mean.numpy() for layer in norms]
    federated = experiment.federated_data(config)
    total = sum(federated.partition.examples_per_client())
    expected = [[0.0, 0.0] for _ in norms]
    for layer in norms:
        layer.momentum = 0.0
    for client in range(config.num_clients):
        for batch in federated.client_dataset(client):
            reference(batch["x"], training=True)
            for pair, layer in zip(expected, norms):
                pair[0] += len(batch["y"]) / total * layer.moving_mean.numpy()
                pair[1] += len(batch["y"]) / total * layer.moving_variance.numpy()
    shipped_norms = [layer for layer in shipped.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    for layer, (mean, variance), old_mean in zip(shipped_norms, expected, averaged):
        assert np.max(np.abs(layer.moving_mean.numpy() - old_mean)) > 0.05
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)
    for kept, trained in zip(shipped.trainable_weights, task.sparse_keras_model(final[0]).trainable_weights):
        np.testing.assert_array_equal(kept.numpy(), trained.numpy())
    # What the summary reports is the model the run ships.
    test = federated.test_dataset().map(lambda batch: (batch["x"], batch["y"]))
    shipped.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    assert shipped.evaluate(test, verbose=0)[1] == pytest.approx(recalibration["test_accuracy"], abs=1e-6)


def test_oneshot_finetune_needs_rounds_to_fine_tune():
    with pytest.raises(ValueError, match=r"fine_tune_rounds must be an integer in \[1, 2\]"):
        experiment.ExperimentConfig(algorithm="oneshot_finetune", rounds=3, options={"fine_tune_rounds": 3})


def test_finished_run_is_not_rerun(resumed_run):
    output_dir, _, summary, _ = resumed_run
    rows = []
    assert experiment.run(TINY, output_dir, progress=False, on_round=rows.append) == summary
    assert rows == []


def test_interrupted_run_without_its_checkpoint_is_refused(resumed_run, tmp_path):
    output_dir, *_ = resumed_run
    for name in ("config.json", "history.json"):
        (tmp_path / name).write_text(open(os.path.join(output_dir, name)).read())
    with pytest.raises(ValueError, match="no checkpoint.npz"):
        experiment.run(TINY, str(tmp_path), progress=False)


def test_config_of_an_older_version_still_resumes(resumed_run, tmp_path):
    output_dir, *_ = resumed_run
    with open(os.path.join(output_dir, "config.json")) as f:
        saved = json.load(f)
    del saved["train_examples_per_class"]  # A field added after the run started: its default applies.
    saved.update(classes_per_client=2, alpha=0.5)  # Ignored by an iid run, saved before they were refused.
    saved.update(quorum=0.5, readjust_every=50, saliency_batches=None)  # Older versions saved every option.
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "summary.json").write_text(json.dumps({"completed": True, "marker": 1}))
    assert experiment.run(TINY, str(tmp_path), progress=False)["marker"] == 1


def test_a_history_of_an_older_version_without_the_newer_fields_resumes(tmp_path):
    experiment.run(TINY, str(tmp_path), progress=False, stop_after=1)
    newer = ("train_flops", "dense_train_flops", "memory_bytes", "dense_memory_bytes", "report_params")
    with np.load(tmp_path / "checkpoint.npz") as saved:
        arrays = dict(saved)
    old_history = [{k: v for k, v in row.items() if k not in newer} for row in json.loads(str(arrays["history"]))]
    arrays["history"] = np.array(json.dumps(old_history))
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    summary = experiment.run(TINY, str(tmp_path), progress=False)
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["round"] for row in rows] == ["1", "2", "3"]
    assert rows[0]["train_flops"] == "" and float(rows[1]["train_flops"]) > 0  # Unknown for the old round.
    assert summary["compute"]["train_flops"] is None  # Not a sum over part of the run.


def test_dense_fedavg_counts_two_models_per_client_every_round(tmp_path):
    fields = {k: v for k, v in TINY_CONFIG.items() if k != "final_sparsity"}
    config = experiment.ExperimentConfig.from_dict({**fields, "algorithm": "fedavg", "rounds": 2})
    summary = experiment.run(config, str(tmp_path), progress=False)
    with open(tmp_path / "history.json") as f:
        history = json.load(f)
    for row in history:  # Round 1 too, although the zero-initialized biases are nonzero only after it.
        assert row["communication"]["download_params"] == row["communication"]["upload_params"] == 3 * 26_122
    assert summary["communication"]["params"] == summary["communication"]["dense_fedavg_params"] == 2 * 2 * 3 * 26_122
    assert summary["communication"]["times_less_than_dense_fedavg"] == 1.0


def test_resume_on_other_client_data_is_refused(resumed_run, tmp_path):
    output_dir, *_ = resumed_run
    for name in ("config.json", "history.json", "checkpoint.npz", "partition.json"):
        (tmp_path / name).write_bytes(open(os.path.join(output_dir, name), "rb").read())
    with open(tmp_path / "partition.json") as f:
        partition = json.load(f)
    partition["clients"][0]["classes"] = partition["clients"][0]["classes"][:1]  # Another split.
    (tmp_path / "partition.json").write_text(json.dumps(partition))
    with pytest.raises(ValueError, match="clients hold other examples"):
        experiment.run(TINY, str(tmp_path), progress=False)


def test_a_split_the_paper_rule_refuses_is_a_clear_error_that_writes_nothing(tmp_path):
    # Digits' classes are unequal (174-183 examples), so 20 shards of 71 cannot stay label-pure.
    config = experiment.ExperimentConfig(partition="label_skew", classes_per_client=2, num_clients=10)
    with pytest.raises(ValueError, match="num_clients=10 and classes_per_client=2"):
        experiment.run(config, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_ctrl_c_prints_one_line_saying_how_to_resume(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "run", interrupted)
    assert cli.main(["run"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tff-sparsify: interrupted; run the same command again to resume after the last completed round"]


def test_a_checkpoint_of_the_version_with_two_round_counters_resumes():
    # That version's client work and finalizer both counted rounds: one int32 scalar more, either
    # where the client work's state is (now stateless) or at the finalizer's end (now counterless).
    w, b, lr = np.ones((2, 2), np.float32), np.zeros(2, np.float32), np.asarray(1.0, np.float32)
    counter = np.asarray(7, np.int32)
    old = [w, b, np.asarray(7, np.int32), lr, np.asarray(7, np.int32)]
    global_state = [w, b, lr, counter]  # Server pruning: the finalizer counts.
    assert [id(a) for a in experiment._without_retired_counters(old, global_state, "c")] == [id(a) for a in [*old[:2], *old[3:]]]
    local_state = [w, b, counter, lr]  # Client pruning: the client work counts.
    assert [id(a) for a in experiment._without_retired_counters(old, local_state, "c")] == [id(a) for a in old[:4]]
    with pytest.raises(ValueError, match="another process state"):
        experiment._without_retired_counters([w, w, lr], global_state, "c")
