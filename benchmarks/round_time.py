"""Round time of FedSparsify-Global vs TFF's stock FedAvg vs a plain `tf.function` loop.

Measures, in one process and on the same client datasets, the median wall time of a round (after
warm-up rounds) of:
  - a plain TensorFlow loop without TFF: for each client, set the global weights, run the same local
    SGD steps in one `tf.function`, then average the client models weighted by examples (FedAvg's
    arithmetic, the floor any TFF process is measured against), on the plain Keras model, and on the
    model wrapped by TFMOT's own `prune_low_magnitude` (the cost of its per-step bookkeeping),
  - TFF's `tff.learning.algorithms.build_weighted_fed_avg` on the plain Keras model,
  - FedSparsify-Global (masked client work + server pruning every round) with the clients' `tf.data`
    datasets passed from Python (serialized into every round),
  - tff_sparsify's FedAvg (masked client work, no pruning) and FedSparsify-Global with the datasets
    built in TFF's worker from per-client files (`tff_sparsify.learning.worker_data`, as `experiment.run` does),
and prints each with its ratios to the plain loop and to stock FedAvg. Uses real Fashion-MNIST when
present, else digits.

    .venv/bin/python benchmarks/round_time.py [--rounds 5] [--warmup 2] [--epochs 1]
"""
import argparse
import os
import statistics
import time

import numpy as np
import psutil
import tensorflow as tf
import tensorflow_federated as tff

import tff_sparsify as ts
from tff_sparsify import compat, learning, models
from tff_sparsify.core import schedules
from tff_sparsify.learning import worker_data
from tff_sparsify.algorithms import fedavg, fedsparsify_global

FASHION_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "fashion_mnist.npz")


class PlainLoopFedAvg:
    """FedAvg rounds in plain TensorFlow: per client, assign the global weights and run local SGD in
    one `tf.function`; the new global model is the example-weighted mean of the client models."""

    def __init__(self, keras_model, loss, learning_rate):
        self.model = keras_model
        variables = keras_model.trainable_variables

        @tf.function
        def local_sgd(dataset):
            examples = tf.constant(0, tf.int64)
            for batch in dataset:
                with tf.GradientTape() as tape:
                    batch_loss = loss(batch["y"], keras_model(batch["x"], training=True))
                for variable, gradient in zip(variables, tape.gradient(batch_loss, variables)):
                    variable.assign_sub(learning_rate * gradient)
                examples += tf.shape(batch["y"], out_type=tf.int64)[0]
            return examples

        self.local_sgd = local_sgd

    def initialize(self):
        return [v.numpy() for v in self.model.trainable_variables]

    def next(self, global_weights, client_datasets):
        total, examples = [np.zeros_like(w) for w in global_weights], 0
        for dataset in client_datasets:
            for variable, value in zip(self.model.trainable_variables, global_weights):
                variable.assign(value)
            n = int(self.local_sgd(dataset))
            for t, variable in zip(total, self.model.trainable_variables):
                t += n * variable.numpy()
            examples += n
        return [t / examples for t in total]


def cpu_seconds() -> float:
    """CPU time so far of this process and its children (TFF's worker_binary)."""
    me = psutil.Process()
    return sum(sum(p.cpu_times()[:2]) for p in [me, *me.children(recursive=True)])


def median_round_seconds(candidates, rounds, warmup):
    """Median wall and CPU seconds per round of each candidate `(process, client data)`; rounds run
    round-robin so that load on the machine affects all candidates alike (CPU time is the steadier
    figure on a shared machine)."""
    states = {name: process.initialize() for name, (process, _) in candidates.items()}
    times = {name: ([], []) for name in candidates}
    for i in range(warmup + rounds):
        for name, (process, client_data) in candidates.items():
            started, cpu_started = time.perf_counter(), cpu_seconds()
            output = process.next(states[name], client_data)
            states[name] = output if isinstance(process, PlainLoopFedAvg) else output.state
            if i >= warmup:
                times[name][0].append(time.perf_counter() - started)
                times[name][1].append(cpu_seconds() - cpu_started)
    return {name: (statistics.median(wall), statistics.median(cpu)) for name, (wall, cpu) in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    compat.configure_tff_runtime()  # As `experiment.run` sets TFF up: one computation per core.

    if os.path.exists(FASHION_MNIST):
        dataset, scheme = ts.load_dataset("fashion_mnist", path=FASHION_MNIST), "label_skew"
    else:  # The paper's deterministic shards cannot split digits' unequal classes label-pure.
        dataset, scheme = ts.load_dataset("digits"), "label_skew_random"
    federated = ts.federate(dataset, args.clients, scheme, classes_per_client=2, batch_size=32)
    client_datasets = federated.client_datasets(epochs=args.epochs)
    plain_fn = lambda: models.build_model("fc", dataset.input_shape, dataset.num_classes)  # noqa: E731
    task = learning.ModelTask(plain_fn, federated.element_spec)
    sgd = lambda: tff.learning.optimizers.build_sgdm(learning_rate=0.02)  # noqa: E731

    def stock_fed_avg(keras_fn):
        def model_fn():
            return tff.learning.models.from_keras_model(
                keras_fn(), input_spec=federated.element_spec, loss=task.loss_fn(), metrics=task.metrics_fn()
            )

        return tff.learning.algorithms.build_weighted_fed_avg(model_fn, client_optimizer_fn=sgd())

    global_process = lambda: fedsparsify_global.build(  # noqa: E731
        task, schedules.SparsitySchedule(0.9, args.warmup + args.rounds), client_optimizer=sgd()
    )
    client_files = worker_data.WorkerClientData(federated)
    sources = client_files.sources(range(args.clients), round_num=0)
    candidates = {
        "stock FedAvg (plain Keras model)": (stock_fed_avg(plain_fn), client_datasets),
        "FedSparsify-Global, Python datasets": (global_process(), client_datasets),
        "tff_sparsify FedAvg, worker datasets": (
            client_files.compose(fedavg.build(task, client_optimizer=sgd()), args.epochs), sources
        ),
        "FedSparsify-Global, worker datasets": (client_files.compose(global_process(), args.epochs), sources),
    }
    # Built last: Keras invalidates models made before TFF traces its own in a graph.
    candidates["plain tf.function loop (plain model)"] = (
        PlainLoopFedAvg(plain_fn(), task.loss_fn(), 0.02), client_datasets
    )
    tfmot_wrapped = models.wrap_for_pruning(plain_fn(), wrapper=compat.PruneLowMagnitude)
    compat.ready_pruning_steps(tfmot_wrapped)
    candidates["plain tf.function loop (TFMOT wrappers)"] = (
        PlainLoopFedAvg(tfmot_wrapped, task.loss_fn(), 0.02), client_datasets
    )
    print(f"dataset={dataset.name} clients={args.clients} examples={len(dataset.y_train)} "
          f"epochs={args.epochs} batches/round={sum(1 for ds in client_datasets for _ in ds)} "
          f"rounds={args.rounds} (after {args.warmup} warm-up)")
    with client_files:
        seconds = median_round_seconds(candidates, args.rounds, args.warmup)
    loop, stock = seconds["plain tf.function loop (plain model)"], seconds["stock FedAvg (plain Keras model)"]
    for name, (wall, cpu) in seconds.items():
        print(f"{name:40s} wall {wall:6.3f} s/round (x{wall / loop[0]:.2f} vs plain loop, x{wall / stock[0]:.2f} vs "
              f"stock FedAvg)   CPU {cpu:6.3f} s/round (x{cpu / loop[1]:.2f}, x{cpu / stock[1]:.2f})")


if __name__ == "__main__":
    main()
