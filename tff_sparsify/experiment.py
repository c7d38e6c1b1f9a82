"""Runs one federated experiment: config -> data -> learning process -> rounds, with results on disk.

An output directory holds `config.json`, `history.csv` / `history.json` (one row per round),
`checkpoint.npz` (the process state after the last completed round and the history up to it: the
round's one commit point), `history.png`, `final_model.keras` (TFMOT wrappers stripped, pruned
weights exactly zero) and, last, `summary.json`. Every file is written atomically, and nothing is
written before the config, data and partition are checked. Running the same config into the same
directory resumes after the last checkpointed round; one process at a time may use a directory.
Clients whose update is not finite are left out of their round; a round with no finite update, or
a non-finite global model, stops the run at its last checkpoint (`NonFiniteError`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tqdm.auto import tqdm

from tff_sparsify import (
    compat, data, files, layout, learning, metrics, models, optimizers, pruning, saliency, worker_data,
)
from tff_sparsify.config import (  # noqa: F401 (re-exported)
    ALGORITHMS, LAST_ROUNDS_FOR_MEAN, MEAN_ACCURACY, ExperimentConfig, without_unused_fields,
)
from tff_sparsify.errors import NonFiniteError

HISTORY_KEY = "history"  # The history inside the checkpoint.


def initial_weights(config: ExperimentConfig, task: learning.ModelTask, federated: data.FederatedData):
    """Seeded initial model weights; for SNIP and GraSP, with the masks they compute at these weights
    from one randomly chosen client's data (paper section 5); for PruneFL, the weights after one
    local epoch of SGD on that client, pruned to s_f by global magnitude (the original PruneFL's
    initial pruning at one client with its 5 reconfigurations is reduced to this single prune)."""
    tf.keras.utils.set_random_seed(config.seed)  # TFF's own initialization is not seeded.
    model = task.wrapped_keras_model()
    if config.algorithm not in (*saliency.MASK_FUNCTIONS, "prunefl"):
        return models.initial_model_weights(model)
    client = int(np.random.default_rng(config.seed).integers(config.num_clients))
    if config.algorithm == "prunefl":
        _train_one_epoch(model, federated.client_dataset(client), task.loss_fn(), config.client_learning_rate)
        masks = pruning.magnitude_masks(models.prunable_weights(model), config.final_sparsity)
    else:
        masks = saliency.MASK_FUNCTIONS[config.algorithm](
            model, federated.client_dataset(client), config.final_sparsity, loss=task.loss_fn(),
            num_batches=config.saliency_batches,
        )
    return saliency.model_weights_with_masks(model, masks)


def _train_one_epoch(model: tf.keras.Model, dataset: tf.data.Dataset, loss, learning_rate: float) -> None:
    """One epoch of plain SGD on a wrapped Keras model (its pruning steps made ready first)."""
    compat.ready_pruning_steps(model)
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate), loss=loss)
    model.fit(dataset.map(lambda batch: (batch["x"], batch["y"])), epochs=1, verbose=0)


def client_optimizer(config: ExperimentConfig) -> tff.learning.optimizers.Optimizer:
    """Clients' SGD: plain, with classical momentum, or with Nesterov momentum."""
    if config.client_nesterov:
        return optimizers.build_nesterov_sgdm(config.client_learning_rate, config.client_momentum)
    return tff.learning.optimizers.build_sgdm(
        learning_rate=config.client_learning_rate, momentum=config.client_momentum or None
    )


def build_process(config: ExperimentConfig, task: learning.ModelTask, weights):
    """The learning process `config.algorithm` names (`weights`: its initial weights)."""
    optimizer_args = dict(
        client_optimizer=client_optimizer(config),
        server_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=config.server_learning_rate),
    )
    algorithm, schedule, blocks = config.algorithm, config.schedule(), config.block_shape
    if algorithm == "fedavg":
        return learning.build_fed_avg(task, **optimizer_args)
    if algorithm == "fedprox":
        return learning.build_fed_prox(task, config.proximal_strength, **optimizer_args)
    if algorithm == "fedsparsify_global":
        return learning.build_fedsparsify_global(task, schedule, block_size=blocks, **optimizer_args)
    if algorithm == "fedsparsify_local":
        return learning.build_fedsparsify_local(
            task, schedule, quorum=config.quorum, block_size=blocks, **optimizer_args
        )
    if algorithm in ("oneshot", "oneshot_finetune"):
        fine_tune = config.fine_tune_rounds if algorithm == "oneshot_finetune" else 0
        return learning.build_one_shot(
            task, config.final_sparsity, config.rounds, fine_tune_rounds=fine_tune, **optimizer_args
        )
    if algorithm == "random":
        return learning.build_random(task, schedule, seed=config.seed, **optimizer_args)
    if algorithm == "prunefl":
        return learning.build_prune_fl(
            task, weights, config.final_sparsity, readjust_every=config.readjust_every, **optimizer_args
        )
    return learning.build_fixed_mask(task, weights, **optimizer_args)  # SNIP, GraSP.


def sample_clients(config: ExperimentConfig, round_num: int) -> list[int]:
    """The clients of round `round_num`: all, or a seeded sample of `clients_per_round`."""
    if config.clients_per_round == config.num_clients:
        return list(range(config.num_clients))
    rng = np.random.default_rng([config.seed, round_num])
    return sorted(rng.choice(config.num_clients, config.clients_per_round, replace=False).tolist())


def run(
    config: ExperimentConfig,
    output_dir: str,
    *,
    stop_after: int | None = None,
    progress: bool = True,
    on_round: Callable[[dict], None] | None = None,
) -> dict:
    """Runs (or resumes) `config` in `output_dir`; returns the summary.

    `stop_after` ends this invocation after that many rounds (run again to resume). The checkpoint is
    the one commit point of a round: it holds the process state and the history up to that round, so
    a run killed at any moment resumes exactly after its last checkpointed round. `summary.json` is
    written last, once the final model and the plot exist. One process at a time owns `output_dir`.
    """
    with files.exclusive_lock(output_dir):
        _check_same_config(config, output_dir)
        if _finished(output_dir):
            return files.read_json(os.path.join(output_dir, layout.SUMMARY_FILE))
        federated = _federated_data(config)  # Validates data, partition and model before anything is written.
        model_name = config.model or models.DEFAULT_MODEL[config.dataset]
        _check_model_fits(model_name, federated.dataset)
        files.remove_temporaries(output_dir)  # Left by a process killed while writing (SIGKILL).
        return _run_locked(config, federated, model_name, output_dir, stop_after, progress, on_round)


def _federated_data(config: ExperimentConfig) -> data.FederatedData:
    try:
        dataset = data.load_dataset(config.dataset, path=config.data_path)
    except (ValueError, OSError) as error:  # Named as the config names the file.
        message = str(error)
        raise ValueError("data_path" + message[len("path"):] if message.startswith("path ") else message) from None
    if config.train_examples_per_class is not None:
        dataset = dataset.first_per_class(config.train_examples_per_class)
    return data.federate(
        dataset,
        config.num_clients,
        config.partition,
        classes_per_client=config.classes_per_client,
        alpha=config.alpha,
        batch_size=config.batch_size,
        seed=config.seed,
    )


def _check_model_fits(name: str, dataset: data.Dataset) -> None:
    try:
        with tf.Graph().as_default():
            models.build_model(name, dataset.input_shape, dataset.num_classes)
    except ValueError as error:
        reason = str(error).splitlines()[0].split(" for '")[0]
        raise ValueError(f"model {name!r} does not fit the {dataset.name} inputs of shape "
                         f"{'x'.join(map(str, dataset.input_shape))} ({reason})") from None


def _run_locked(config, federated, model_name, output_dir, stop_after, progress, on_round) -> dict:
    checkpoint = os.path.join(output_dir, layout.CHECKPOINT_FILE)
    history = _resume_history(output_dir, checkpoint)
    _check_same_partition(federated.partition.describe(), output_dir, resuming=bool(history))
    files.write_json(os.path.join(output_dir, layout.CONFIG_FILE), config.to_dict())
    files.write_json(os.path.join(output_dir, "partition.json"), federated.partition.describe())
    dataset = federated.dataset
    task = learning.ModelTask(
        lambda: models.build_model(model_name, dataset.input_shape, dataset.num_classes),
        federated.element_spec,
    )
    _say(progress, f"{output_dir}: building {config.algorithm} (TFF traces its computations: about 10-30 s, "
                   "and the first round traces on TFF's worker)")
    weights = initial_weights(config, task, federated)
    with worker_data.WorkerClientData(federated) as client_data:  # The worker builds client datasets.
        process = client_data.compose(build_process(config, task, weights), config.local_epochs)
        state = process.initialize()
        state = _load_state(checkpoint, state) if history else process.set_model_weights(state, weights)
        evaluator = _Evaluator(task, federated.test_dataset())
        num_prunable = sum(int(np.prod(k.shape)) for k in models.prunable_weights(evaluator.model))
        ledger = metrics.CommunicationLedger([metrics.RoundCost.from_dict(r["communication"]) for r in history])
        first = len(history) + 1
        last = config.rounds if stop_after is None else min(config.rounds, first - 1 + stop_after)
        bar = tqdm(range(first, last + 1), initial=first - 1, total=config.rounds, disable=not progress,
                   desc=config.algorithm, unit="round")
        for round_num in bar:
            started = time.perf_counter()
            output = process.next(state, client_data.sources(sample_clients(config, round_num), round_num))
            _check_finite(output, process.get_model_weights(output.state), round_num)
            state = output.state
            row = _history_row(round_num, output.metrics, evaluator(process.get_model_weights(state)))
            communication = output.metrics["client_work"]["communication"]
            cost = ledger.add(_round_cost(config, communication, num_prunable))
            row.update(mbit=cost.mbit, cumulative_mbit=ledger.mbit, communication=cost.to_dict(),
                       update_nonzero=int(communication["update_nonzero"]))
            row["seconds"] = round(time.perf_counter() - started, 3)
            history.append(row)
            _save_state(checkpoint, state, history)  # The round's commit point.
            _write_history(output_dir, history)
            postfix = dict(test_acc=_format(row["test_accuracy"]), sparsity=f"{row['sparsity']:.4f}",
                           loss=_format(row["train_loss"]))
            if row["nonfinite_clients"]:
                postfix["nonfinite_clients"] = row["nonfinite_clients"]
            bar.set_postfix(postfix)
            if on_round:
                on_round(row)

    summary = _summary(config, history, ledger, evaluator.num_params)
    if summary["completed"]:
        stripped = task.sparse_keras_model(process.get_model_weights(state))
        files.atomic_write(os.path.join(output_dir, layout.FINAL_MODEL_FILE), stripped.save, suffix=".keras")
    from tff_sparsify import plots  # Imported here: matplotlib is only needed for this figure.

    plots.plot_history(history, os.path.join(output_dir, "history.png"), title=config.algorithm)
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


def _resume_history(output_dir: str, checkpoint: str) -> list[dict]:
    """The history of the rounds the checkpoint holds (history.json is rewritten from it); for a
    checkpoint of an older version, without its history, history.json."""
    if os.path.exists(checkpoint):
        with np.load(checkpoint) as saved:
            if HISTORY_KEY in saved.files:
                history = json.loads(str(saved[HISTORY_KEY]))
                _write_history(output_dir, history)
                return history
    history = files.read_json(os.path.join(output_dir, "history.json")) or []
    if history and not os.path.exists(checkpoint):
        raise ValueError(f"output_dir {output_dir!r} has {len(history)} rounds of history but no "
                         f"{layout.CHECKPOINT_FILE} to resume from; use another output directory")
    return history


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


def _round_cost(config: ExperimentConfig, communication, num_prunable: int) -> metrics.RoundCost:
    """The round's paper-style cost (appendix C: the models sent, see `learning.client_work`);
    FedSparsify-Local clients also upload a mask."""
    clients = int(communication["clients"])
    return metrics.RoundCost(
        download_params=int(communication["download_params"]),
        upload_params=int(communication["upload_params"]),
        mask_bits=clients * num_prunable if config.algorithm == "fedsparsify_local" else 0,
        download_bytes=int(communication["download_bytes"]),
        upload_bytes=int(communication["upload_bytes"]),
    )


class _Evaluator:
    """Test loss and accuracy of global model weights, in a wrapped Keras model."""

    def __init__(self, task: learning.ModelTask, test_dataset: tf.data.Dataset):
        self.model = task.wrapped_keras_model()
        # Parameters as the paper counts them: trainable weights and BatchNorm statistics.
        sent = [*self.model.trainable_weights, *models.batch_norm_statistics(self.model)]
        self.num_params = sum(int(np.prod(v.shape)) for v in sent)
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


def _summary(config: ExperimentConfig, history: list[dict], ledger, num_params: int) -> dict:
    last = history[-LAST_ROUNDS_FOR_MEAN:]
    dense = metrics.dense_fedavg_cost(num_params, config.clients_per_round, len(history)) if history else 0
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
            "mbit": ledger.mbit,
            "bytes": ledger.bytes,
            "dense_fedavg_params": dense,
            "times_less_than_dense_fedavg": ledger.ratio_to(dense) if history else None,
        },
        "seconds": round(sum(r["seconds"] for r in history), 1),
    }


def _check_same_config(config: ExperimentConfig, output_dir: str) -> None:
    """Refuses to resume a run with another config; fields added since it started take their default,
    values its partition or algorithm ignores (saved before they were refused) are ignored,
    and a `data_path` spelled differently (relative, absolute) that names the same file is the same.
    A folder whose run stopped before its first round (a diverged first round, a late error) takes
    any config."""
    saved = files.read_json(os.path.join(output_dir, layout.CONFIG_FILE))
    started = any(os.path.exists(os.path.join(output_dir, f)) for f in (layout.CHECKPOINT_FILE, "history.json"))
    if saved is None or not started:  # A folder holds a run once a round is done.
        return
    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    current = config.to_dict()
    saved = without_unused_fields({**defaults, **saved})
    changed = sorted(k for k, v in saved.items() if not _same_value(k, current.get(k), v))
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


def _save_state(path: str, state, history: list[dict]) -> None:
    """The process state and the history up to it, in one atomic file."""
    arrays = {f"a{i}": np.asarray(v) for i, v in enumerate(tf.nest.flatten(state))}
    arrays[HISTORY_KEY] = np.array(json.dumps(history))
    files.atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


def _load_state(path: str, like):
    with np.load(path) as saved:
        arrays = [saved[f"a{i}"] for i in range(len(tf.nest.flatten(like)))]
    return tf.nest.pack_sequence_as(like, arrays)


def _write_history(output_dir: str, history: list[dict]) -> None:
    files.write_json(os.path.join(output_dir, "history.json"), history)
    files.write_csv(os.path.join(output_dir, "history.csv"), [_flat_row(row) for row in history])


def _flat_row(row: dict) -> dict:
    """A history row with its nested `communication` fields as top-level columns."""
    flat = {k: v for k, v in row.items() if k != "communication"}
    flat.update(row.get("communication", {}))
    return flat
