"""Runs one federated experiment: config -> data -> learning process -> rounds, with results on disk.

An output directory holds `config.json`, `history.csv` / `history.json` (one row per round),
`checkpoint.npz` (the process state after the last completed round and the history up to it: the
round's one commit point), `history.png`, `final_model.keras` (TFMOT wrappers stripped, pruned
weights exactly zero) and, last, `summary.json`. Every file is written atomically, and nothing is
written before the config, data and partition are checked. Running the same config into the same
directory resumes after the last checkpointed round; one process at a time may use a directory.
Clients whose update is not finite are left out of their round; a round with no finite update, or
a non-finite global model, stops the run at its last checkpoint (`NonFiniteError`). With
`config.workers` the rounds run on TFF workers (`distributed.Cluster`, checked before anything is
written); a worker that stops answering fails the round (`distributed.WorkerFailure`) at the same
checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Callable

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tff_sparsify import algorithms, compat, data, distributed, files, layout, learning, models
from tff_sparsify.core import metrics
from tff_sparsify.learning import batch_norm, worker_data
from tff_sparsify.config import EXECUTION_FIELDS, LAST_ROUNDS_FOR_MEAN, MEAN_ACCURACY, ExperimentConfig
from tff_sparsify.errors import NonFiniteError

HISTORY_KEY = "history"  # The history inside the checkpoint.


def run(
    config: ExperimentConfig,
    output_dir: str,
    *,
    stop_after: int | None = None,
    progress: bool = True,
    on_round: Callable[[dict], None] | None = None,
) -> dict:
    """Runs (or resumes) `config` in `output_dir`; returns the summary.

    `stop_after` ends this invocation after that many rounds (run again to resume); `on_round` gets
    each round's history row. The checkpoint is the one commit point of a round: it holds the process
    state and the history up to that round, so a run killed at any moment resumes exactly after its
    last checkpointed round. `summary.json` is written last, once the final model and the plot exist.
    One process at a time owns `output_dir`. TFF runs as `tff_sparsify.configure_runtime` sets it up
    (with its defaults, unless the program called it first).
    """
    with files.exclusive_lock(output_dir):
        _check_same_config(config, output_dir)
        if _finished(output_dir):
            return files.read_json(os.path.join(output_dir, layout.SUMMARY_FILE))
        federated = federated_data(config)  # Validates data, partition and model before anything is written.
        model_name = _model_name(config)
        _check_model_fits(model_name, federated.dataset, config.recalibrate_batch_norm)
        compat.configure_tff_runtime_once()
        with _cluster(config, progress) as cluster:  # Workers checked before anything is written.
            return _run(config, federated, model_name, output_dir, cluster, stop_after, progress, on_round)


def _run(config, federated, model_name, output_dir, cluster, stop_after, progress, on_round) -> dict:
    """`run` once the inputs are checked and the workers (if any) answer."""
    files.remove_temporaries(output_dir)  # Left by a process killed while writing (SIGKILL).
    checkpoint = _Checkpoint(output_dir)
    history = checkpoint.history()
    _write_inputs(config, federated, output_dir, resuming=bool(history))
    setup = _setup(config, federated, model_name)
    _say(progress, f"{output_dir}: building {config.algorithm} (TFF traces its computations: about 10-30 s, "
                   "and the first round traces on TFF's worker)")
    algorithm = algorithms.get(config.algorithm)
    weights = _initial_weights(algorithm, setup, resuming=bool(history))
    with worker_data.WorkerClientData(federated) as client_data:  # The worker builds client datasets.
        process = client_data.compose(algorithm.build_process(setup, weights), config.local_epochs)
        if cluster:
            cluster.check_readable(client_data.paths)
            distributed.check_splittable(process.next, config.algorithm)
        state = process.initialize()
        state = checkpoint.load(state) if history else process.set_model_weights(state, weights)
        # Traced before the evaluator's Keras model, which a model built in a graph later would invalidate.
        recalibrate = batch_norm.build_batch_statistics(setup.task) if config.recalibrate_batch_norm else None
        evaluator = _Evaluator(setup.task, federated.test_dataset(), config.batch_size)
        last = config.rounds if stop_after is None else min(config.rounds, len(history) + stop_after)
        counting = _RoundCounting(setup, algorithm, evaluator, history)
        callbacks = [checkpoint.save]
        if on_round:
            callbacks.append(lambda row, state, history: on_round(row))
        with tqdm(total=config.rounds, initial=len(history), disable=not progress, desc=config.algorithm,
                  unit="round") as bar:
            callbacks.append(lambda row, state, history: _show(bar, row))
            next_round = functools.partial(cluster.call, process.next) if cluster else process.next
            state = _train(process, next_round, state, client_data, counting, history, last, callbacks)
    weights, recalibration = process.get_model_weights(state), None
    if recalibrate and len(history) == config.rounds:
        recalibration = _recalibrate(recalibrate, setup, weights, output_dir, progress)
        weights = recalibration.weights
    summary = _summary(config, history, counting, evaluator, recalibration)
    return _write_results(summary, setup.task, weights, history, output_dir)


def _recalibrate(recalibration, setup: algorithms.Setup, weights, output_dir: str, progress: bool):
    """`batch_norm.recalibrate` of the final `weights` over every client's training data (the
    `recalibrate_batch_norm` exchange); a `NonFiniteError` if a statistic is not finite."""
    federated = setup.federated
    _say(progress, f"{output_dir}: recalibrating the BatchNorm statistics at the final weights: one pass "
                   f"over each of the {federated.num_clients} clients' data")
    result = batch_norm.recalibrate(recalibration, setup.task, weights, federated.client_datasets())
    if not all(np.all(np.isfinite(s)) for s in result.weights.non_trainable):
        raise NonFiniteError("the BatchNorm statistics the clients recalibrated hold NaN or inf; the run keeps its "
                             "last checkpoint and writes no final model (run it without recalibrate_batch_norm "
                             "into another directory to keep the averaged statistics)")
    return result


def sample_clients(config: ExperimentConfig, round_num: int) -> list[int]:
    """The clients of round `round_num`: all, or a seeded sample of `clients_per_round`."""
    if config.clients_per_round == config.num_clients:
        return list(range(config.num_clients))
    rng = np.random.default_rng([config.seed, round_num])
    return sorted(rng.choice(config.num_clients, config.clients_per_round, replace=False).tolist())


# --- Build ------------------------------------------------------------------------------------


def federated_data(config: ExperimentConfig) -> data.FederatedData:
    """The data of a run of `config`, split as the run splits it: the server's held-out examples,
    the per-class subset, the clients' partition (e.g. to analyse a finished run's model)."""
    try:
        dataset = data.load_dataset(config.dataset, path=config.data_path)
    except (ValueError, OSError) as error:  # Named as the config names the file.
        message = str(error)
        raise ValueError("data_path" + message[len("path"):] if message.startswith("path ") else message) from None
    server = None
    if config.server_examples:  # Held out of the whole training split, before any scaling.
        server, dataset = dataset.hold_out_last_per_class(config.server_examples)
    if config.train_examples_per_class is not None:
        dataset = dataset.first_per_class(config.train_examples_per_class)
    federated = data.federate(
        dataset,
        config.num_clients,
        config.partition,
        classes_per_client=config.classes_per_client,
        alpha=config.alpha,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    return dataclasses.replace(federated, server=server)


@contextlib.contextmanager
def _cluster(config: ExperimentConfig, progress: bool):
    """The TFF workers of `config.workers` as the context of this thread (None: this process)."""
    if config.workers is None:
        yield None
        return
    _say(progress, f"TFF workers {config.workers}: checking that they answer. {distributed.SECURITY_WARNING}")
    with distributed.Cluster(config.workers, round_timeout=config.round_timeout) as cluster:
        _say(progress, f"rounds run on {len(cluster.addresses)} TFF workers: {', '.join(cluster.addresses)}")
        yield cluster


def _model_name(config: ExperimentConfig) -> str:
    return config.model or models.DEFAULT_MODEL[config.dataset]


def _check_model_fits(name: str, dataset: data.Dataset, recalibrate_batch_norm: bool = False) -> None:
    try:
        with tf.Graph().as_default():
            model = models.build_model(name, dataset.input_shape, dataset.num_classes)
            has_batch_norm = bool(models.batch_norm_statistics(model))
    except ValueError as error:
        reason = str(error).splitlines()[0].split(" for '")[0]
        raise ValueError(f"model {name!r} does not fit the {dataset.name} inputs of shape "
                         f"{'x'.join(map(str, dataset.input_shape))} ({reason})") from None
    if recalibrate_batch_norm and not has_batch_norm:
        raise ValueError(f"recalibrate_batch_norm needs a model with BatchNorm layers; model {name!r} has none")


def _write_inputs(config: ExperimentConfig, federated: data.FederatedData, output_dir: str, resuming: bool) -> None:
    _check_same_partition(federated.partition.describe(), output_dir, resuming)
    files.write_json(os.path.join(output_dir, layout.CONFIG_FILE), config.to_dict())
    files.write_json(os.path.join(output_dir, "partition.json"), federated.partition.describe())


def _setup(config: ExperimentConfig, federated: data.FederatedData, model_name: str) -> algorithms.Setup:
    dataset = federated.dataset
    task = learning.ModelTask(
        lambda: models.build_model(model_name, dataset.input_shape, dataset.num_classes),
        federated.element_spec,
    )
    return algorithms.Setup(config, task, federated)


def initial_weights(config: ExperimentConfig):
    """(task, weights): the `learning.ModelTask` of a run of `config` and the seeded weights the run
    starts from, with the masks its algorithm chooses from data (SNIP's and GraSP's scores, PruneFL's
    first epoch, FedTiny's pre-training and BatchNorm selection); `task.layout.masks(
    weights.non_trainable)` are the kernels' masks, in `models.pruning_wrappers` order."""
    federated = federated_data(config)
    setup = _setup(config, federated, _model_name(config))
    return setup.task, _initial_weights(algorithms.get(config.algorithm), setup, resuming=False)


def _initial_weights(algorithm: algorithms.Algorithm, setup: algorithms.Setup, resuming: bool):
    """The algorithm's initial weights, made right after seeding TensorFlow with the run's seed (TFF's
    own initialization is not seeded). A resumed run takes its whole state from the checkpoint, so
    it only needs their structure: the seeded initialization, without the algorithm's choice of masks
    from data (SNIP's scoring, FedTiny's pre-training and BatchNorm selection)."""
    tf.keras.utils.set_random_seed(setup.config.seed)
    if algorithm.initial_weights and not resuming:
        return algorithm.initial_weights(setup)
    return models.initial_model_weights(setup.task.wrapped_keras_model())


# --- Train ------------------------------------------------------------------------------------


def _train(process, next_round, state, client_data, counting: _RoundCounting, history: list[dict], last: int,
           on_round):
    """Rounds len(history) + 1 .. `last`, each by `next_round` (`process.next`, or it on the workers):
    each one's history row is appended to `history` and handed, with the new state, to the
    `on_round` callbacks (checkpoint first). Returns the last state."""
    for round_num in range(len(history) + 1, last + 1):
        started = time.perf_counter()
        sources = client_data.sources(sample_clients(counting.config, round_num), round_num)
        output = next_round(state, sources)
        _check_finite(output, process.get_model_weights(output.state), round_num)
        state = output.state
        row = counting.row(round_num, output.metrics, process.get_model_weights(state))
        row["seconds"] = round(time.perf_counter() - started, 3)
        history.append(row)
        for callback in on_round:
            callback(row, state, history)
    return state


class _RoundCounting:
    """A round's history row: training and test metrics, sparsity, and communication (paper appendix
    C: the models sent and the clients' reports, see `learning.client_work`; clients of an algorithm
    that uploads masks add one bit per prunable weight). The ledger starts with the algorithm's
    exchanges before round 1 (`Algorithm.setup_cost`, FedTiny's BatchNorm selection), if any."""

    def __init__(self, setup: algorithms.Setup, algorithm: algorithms.Algorithm, evaluator: _Evaluator,
                 history: list[dict]):
        self.config, self.evaluator = setup.config, evaluator
        self.mask_bits_per_client = evaluator.num_prunable if algorithm.uploads_masks else 0
        self.setup_cost = algorithm.setup_cost(setup) if algorithm.setup_cost else metrics.RoundCost(0, 0, 0, 0, 0)
        rounds = [metrics.RoundCost.from_dict(r["communication"]) for r in history]
        self.ledger = metrics.CommunicationLedger([self.setup_cost, *rounds])

    def row(self, round_num: int, round_metrics, weights) -> dict:
        row = _history_row(round_num, round_metrics, self.evaluator(weights))
        communication = round_metrics["client_work"]["communication"]
        cost = self.ledger.add(metrics.RoundCost(
            download_params=int(communication["download_params"]),
            upload_params=int(communication["upload_params"]),
            mask_bits=int(communication["clients"]) * self.mask_bits_per_client,
            download_bytes=int(communication["download_bytes"]),
            upload_bytes=int(communication["upload_bytes"]),
        ))
        compute = round_metrics["client_work"]["compute"]
        clients = max(int(communication["clients"]), 1)
        row.update(mbit=cost.mbit, cumulative_mbit=self.ledger.mbit, communication=cost.to_dict(),
                   report_params=int(communication["report_params"]),
                   update_nonzero=int(communication["update_nonzero"]),
                   train_flops=float(compute["train_flops"]), dense_train_flops=float(compute["dense_train_flops"]),
                   memory_bytes=int(compute["memory_bytes"]) // clients,
                   dense_memory_bytes=int(compute["dense_memory_bytes"]) // clients)
        return row


def _show(bar: tqdm, row: dict) -> None:
    """Moves the progress bar one round, showing its test accuracy, sparsity and training loss."""
    postfix = dict(test_acc=_format(row["test_accuracy"]), sparsity=f"{row['sparsity']:.4f}",
                   loss=_format(row["train_loss"]))
    if row["nonfinite_clients"]:
        postfix["nonfinite_clients"] = row["nonfinite_clients"]
    bar.set_postfix(postfix, refresh=False)
    bar.update()


class _Checkpoint:
    """`checkpoint.npz` of a run folder: the process state and the history up to it, in one atomic
    file (the round's commit point), with `history.json` and `history.csv` rewritten from it."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, layout.CHECKPOINT_FILE)

    def history(self) -> list[dict]:
        """The history of the rounds the checkpoint holds (history.json is rewritten from it); for a
        checkpoint of an older version, without its history, history.json."""
        if os.path.exists(self.path):
            with np.load(self.path) as saved:
                if HISTORY_KEY in saved.files:
                    history = json.loads(str(saved[HISTORY_KEY]))
                    _write_history(self.output_dir, history)
                    return history
        history = files.read_json(os.path.join(self.output_dir, "history.json")) or []
        if history and not os.path.exists(self.path):
            raise ValueError(f"output_dir {self.output_dir!r} has {len(history)} rounds of history but no "
                             f"{layout.CHECKPOINT_FILE} to resume from; use another output directory")
        return history

    def save(self, row: dict, state, history: list[dict]) -> None:
        arrays = {f"a{i}": np.asarray(v) for i, v in enumerate(tf.nest.flatten(state))}
        arrays[HISTORY_KEY] = np.array(json.dumps(history))
        files.atomic_write(self.path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")
        _write_history(self.output_dir, history)

    def load(self, like):
        """The saved state in the structure of `like`. A checkpoint of a version whose client work and
        finalizer both counted rounds holds one int32 scalar more; it is left out."""
        with np.load(self.path) as saved:
            arrays = [saved[f"a{i}"] for i in range(len(saved.files) - (HISTORY_KEY in saved.files))]
        expected = [np.asarray(v) for v in tf.nest.flatten(like)]
        return tf.nest.pack_sequence_as(like, _without_retired_counters(arrays, expected, self.path))


def _without_retired_counters(arrays: list, expected: list, path: str) -> list:
    """`arrays` matched in order to the `expected` shapes and dtypes, leaving out int32 scalars that
    match nothing (round counters an older version kept); a ValueError if they still differ."""
    kept, i = [], 0
    for array in arrays:
        if i < len(expected) and array.shape == expected[i].shape and array.dtype == expected[i].dtype:
            kept.append(array)
            i += 1
        elif not (array.shape == () and array.dtype == np.int32):
            break
    if len(kept) != len(expected):
        raise ValueError(f"{path} holds another process state than {len(expected)} tensors of this "
                         "algorithm and model; use another output directory")
    return kept


# --- Write results ----------------------------------------------------------------------------


def _write_results(summary: dict, task, weights, history: list[dict], output_dir: str) -> dict:
    """The final model (of a completed run), the history plot and, last, `summary`."""
    if summary["completed"]:
        stripped = task.sparse_keras_model(weights)
        files.atomic_write(os.path.join(output_dir, layout.FINAL_MODEL_FILE), stripped.save, suffix=".keras")
    from tff_sparsify import plots  # Imported here: matplotlib is only needed for this figure.

    plots.plot_history(history, os.path.join(output_dir, "history.png"), title=summary["config"]["algorithm"])
    files.write_json(os.path.join(output_dir, layout.SUMMARY_FILE), summary)  # Last: the run is complete.
    return summary


def _say(progress: bool, message: str) -> None:
    """A line on what is happening while no progress bar moves (with the progress bars on)."""
    if progress:
        tqdm.write(message, file=sys.stderr)


def _finished(output_dir: str) -> bool:
    """Whether `output_dir` holds a completed run. The summary is written after the final model, but a
    run of an older version may have died in between: with its checkpoint there, it is finished again
    (no round is rerun). Without a checkpoint (results kept without models), the summary decides."""
    summary = files.read_json(os.path.join(output_dir, layout.SUMMARY_FILE))
    if not (summary and summary["completed"]):
        return False
    return os.path.exists(os.path.join(output_dir, layout.FINAL_MODEL_FILE)) or not os.path.exists(
        os.path.join(output_dir, layout.CHECKPOINT_FILE))


def _check_finite(output, weights, round_num: int) -> None:
    """Stops the run (its last checkpoint intact) when no client's update was finite or when the new
    global model is not; a few non-finite clients are left out of the round and reported."""
    clients = int(output.metrics["client_work"]["communication"]["clients"])
    if int(output.metrics["client_work"]["nonfinite_clients"]) == clients:
        raise NonFiniteError(
            f"round {round_num}: the update of every client ({clients}) holds NaN or inf; the run stops "
            f"after round {round_num - 1}, its last checkpoint. Lower client_learning_rate "
            "(--client-learning-rate) or check the data for NaN or inf values"
        )
    if not all(np.all(np.isfinite(w)) for w in (*weights.trainable, *weights.non_trainable)):
        raise NonFiniteError(
            f"round {round_num}: the global model holds NaN or inf; the run stops after round "
            f"{round_num - 1}, its last checkpoint. Lower the learning rates"
        )


def _format(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"


class _Evaluator:
    """Test loss and accuracy of global model weights, in a wrapped Keras model."""

    def __init__(self, task: learning.ModelTask, test_dataset: tf.data.Dataset, batch_size: int):
        self.model = task.wrapped_keras_model()
        # Parameters as the paper counts them: trainable weights and BatchNorm statistics.
        sent = [*self.model.trainable_weights, *models.batch_norm_statistics(self.model)]
        self.num_params = sum(int(np.prod(v.shape)) for v in sent)
        self.num_prunable = sum(int(np.prod(k.shape)) for k in models.prunable_weights(self.model))
        self.activation_bytes = models.activation_bytes(self.model, batch_size)
        self.model.compile(loss=task.loss_fn(), metrics=task.metrics_fn())
        self.test_dataset = test_dataset.map(lambda batch: (batch["x"], batch["y"]))

    def __call__(self, weights) -> dict:
        weights.assign_weights_to(self.model)
        loss, accuracy = self.model.evaluate(self.test_dataset, verbose=0)
        return {"test_loss": float(loss), "test_accuracy": float(accuracy)}


def _history_row(round_num: int, metrics, evaluation: dict) -> dict:
    """The round's results; a value that is NaN or inf (a target before pruning starts, the training
    loss of a round with a diverged client) is None, so the history stays valid JSON."""
    train, final = metrics["client_work"]["train"], metrics["finalizer"]
    return {
        "round": round_num,
        "train_loss": _finite_or_none(train["loss"]),
        "train_accuracy": _finite_or_none(train["accuracy"]),
        **{k: _finite_or_none(v) for k, v in evaluation.items()},
        "target_sparsity": _finite_or_none(final["target_sparsity"]),
        "sparsity": float(final["sparsity"]),
        "sparsity_all": float(final["sparsity_all"]),
        "nonzero_params": int(final["nonzero_params"]),
        "nonfinite_clients": int(metrics["client_work"]["nonfinite_clients"]),
    }


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _summary(config: ExperimentConfig, history: list[dict], counting: _RoundCounting, evaluator: _Evaluator,
             recalibration: batch_norm.Recalibration | None) -> dict:
    last = history[-LAST_ROUNDS_FOR_MEAN:]
    ledger = counting.ledger
    if recalibration:
        ledger = metrics.CommunicationLedger([*ledger.rounds, recalibration.cost])
    dense = metrics.dense_fedavg_cost(evaluator.num_params, config.clients_per_round, len(history)) if history else 0
    return {
        "config": config.to_dict(),
        "rounds_completed": len(history),
        "completed": len(history) == config.rounds,
        "final_test_accuracy": history[-1]["test_accuracy"] if history else None,
        MEAN_ACCURACY: float(np.mean([r["test_accuracy"] for r in last])) if history else None,
        "final_sparsity": history[-1]["sparsity"] if history else None,
        "final_sparsity_all": history[-1]["sparsity_all"] if history else None,
        "final_nonzero_params": history[-1]["nonzero_params"] if history else None,
        "communication": {
            "params": ledger.params,
            "setup_params": counting.setup_cost.params,
            "recalibration_params": recalibration.cost.params if recalibration else 0,
            "mbit": ledger.mbit,
            "bytes": ledger.bytes,
            "dense_fedavg_params": dense,
            "times_less_than_dense_fedavg": ledger.ratio_to(dense) if history else None,
        },
        "compute": _compute_summary(history, evaluator.activation_bytes),
        "batch_norm_recalibration": _recalibration_summary(evaluator, recalibration),
        "seconds": round(sum(r["seconds"] for r in history), 1),
    }


def _recalibration_summary(evaluator: _Evaluator, recalibration: batch_norm.Recalibration | None) -> dict | None:
    """The final model's test metrics with the clients' recalibrated BatchNorm statistics, and the
    exchange's communication (None: not recalibrated)."""
    if recalibration is None:
        return None
    return {**evaluator(recalibration.weights), "communication": recalibration.cost.to_dict()}


def _compute_summary(history: list[dict], activation_bytes: int) -> dict:
    """Training FLOPs over the run and the peak on-device memory of a client, each beside dense
    training's (FedTiny's measures; see `learning.client_work`); activations apart. Rows of a version
    that did not measure them count as unmeasured (None)."""
    if not history or any("train_flops" not in r for r in history):
        return {"train_flops": None, "flops_relative_to_dense": None, "peak_memory_bytes": None,
                "memory_relative_to_dense": None, "activation_bytes": activation_bytes}
    flops = sum(r["train_flops"] for r in history)
    peak = max(r["memory_bytes"] for r in history)
    return {
        "train_flops": flops,
        "flops_relative_to_dense": flops / sum(r["dense_train_flops"] for r in history),
        "peak_memory_bytes": peak,
        "memory_relative_to_dense": peak / history[0]["dense_memory_bytes"],
        "activation_bytes": activation_bytes,
    }


def _check_same_config(config: ExperimentConfig, output_dir: str) -> None:
    """Refuses to resume a run with another config; a config saved by an older version is read as
    `ExperimentConfig.from_saved` reads it, and a `data_path` spelled differently (relative, absolute) that names the same file is the same.
    A folder whose run stopped before its first round (a diverged first round, a late error) takes
    any config."""
    saved = files.read_json(os.path.join(output_dir, layout.CONFIG_FILE))
    started = any(os.path.exists(os.path.join(output_dir, f)) for f in (layout.CHECKPOINT_FILE, "history.json"))
    if saved is None or not started:  # A folder holds a run once a round is done.
        return
    current, saved = config.to_dict(), ExperimentConfig.from_saved(saved).to_dict()
    changed = sorted(k for k in {*current, *saved} - set(EXECUTION_FIELDS)
                     if not _same_value(k, current.get(k), saved.get(k)))
    if changed:
        raise ValueError(
            f"output_dir {output_dir!r} holds a run with a different config ({', '.join(changed)}); "
            "use another output directory"
        )


def _check_same_partition(partition: dict, output_dir: str, resuming: bool) -> None:
    """Refuses to resume on other client data than the run started with (e.g. a partition scheme
    whose rule changed since: `label_skew` was random class dealing before it was the paper's)."""
    saved = files.read_json(os.path.join(output_dir, "partition.json"))
    if resuming and saved is not None and saved["clients"] != partition["clients"]:
        raise ValueError(
            f"output_dir {output_dir!r} holds a run whose clients hold other examples than "
            f"partition={partition['partition']!r} gives now (see its partition.json); use another output directory"
        )


def _same_value(field: str, current, saved) -> bool:
    if field == "data_path" and current and saved and os.path.exists(current) and os.path.exists(saved):
        return os.path.samefile(current, saved)
    return current == saved


def _write_history(output_dir: str, history: list[dict]) -> None:
    files.write_json(os.path.join(output_dir, "history.json"), history)
    files.write_csv(os.path.join(output_dir, "history.csv"), [_flat_row(row) for row in history])


def _flat_row(row: dict) -> dict:
    """A history row with its nested `communication` fields as top-level columns."""
    flat = {k: v for k, v in row.items() if k != "communication"}
    flat.update(row.get("communication", {}))
    return flat
