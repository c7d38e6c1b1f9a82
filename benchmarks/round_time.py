"""Round time of FedSparsify-Global vs TFF's stock FedAvg on the same model and clients.

Measures, in one process and on the same client datasets, the median wall time of a round (after
warm-up rounds) of:
  - TFF's `tff.learning.algorithms.build_weighted_fed_avg` on the plain Keras model,
  - the same stock FedAvg on the TFMOT-wrapped model (same model as FedSparsify trains),
  - tff_sparsify's FedAvg (masked client work, no pruning),
  - FedSparsify-Global (masked client work + server pruning every round),
and prints each with its ratios to the two stock FedAvg rounds. Uses real Fashion-MNIST when present, else digits.

    .venv/bin/python benchmarks/round_time.py [--rounds 5] [--warmup 2] [--epochs 1]
"""
import argparse
import os
import statistics
import time

import tensorflow_federated as tff

import tff_sparsify as ts
from tff_sparsify import learning, models, schedules

FASHION_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "fashion_mnist.npz")


def median_round_seconds(candidates, client_datasets, rounds, warmup):
    """Median seconds per round of each candidate; rounds run round-robin so that load on the
    machine affects all candidates alike."""
    states = {}
    for name, (process, weights) in candidates.items():
        states[name] = process.initialize()
        if weights is not None:
            states[name] = process.set_model_weights(states[name], weights)
    times = {name: [] for name in candidates}
    for i in range(warmup + rounds):
        for name, (process, _) in candidates.items():
            started = time.perf_counter()
            states[name] = process.next(states[name], client_datasets).state
            if i >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()

    if os.path.exists(FASHION_MNIST):
        dataset = ts.load_dataset("fashion_mnist", path=FASHION_MNIST)
    else:
        dataset = ts.load_dataset("digits")
    federated = ts.federate(dataset, args.clients, "label_skew", classes_per_client=2, batch_size=32)
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

    stock_wrapped = stock_fed_avg(task.wrapped_keras_model)
    candidates = {
        "stock FedAvg (plain Keras model)": (stock_fed_avg(plain_fn), None),
        "stock FedAvg (TFMOT-wrapped model)": (stock_wrapped, models.initial_model_weights(task.wrapped_keras_model())),
        "tff_sparsify FedAvg": (learning.build_fed_avg(task, client_optimizer=sgd()), None),
        "FedSparsify-Global (s_f=0.9)": (
            learning.build_fedsparsify_global(
                task, schedules.SparsitySchedule(0.9, args.warmup + args.rounds), client_optimizer=sgd()
            ),
            None,
        ),
    }
    print(f"dataset={dataset.name} clients={args.clients} examples={len(dataset.y_train)} "
          f"epochs={args.epochs} batches/round={sum(1 for ds in client_datasets for _ in ds)} "
          f"rounds={args.rounds} (after {args.warmup} warm-up)")
    seconds = median_round_seconds(candidates, client_datasets, args.rounds, args.warmup)
    plain, wrapped = seconds["stock FedAvg (plain Keras model)"], seconds["stock FedAvg (TFMOT-wrapped model)"]
    for name, value in seconds.items():
        print(f"{name:38s} {value:7.3f} s/round   x{value / plain:.2f} vs stock FedAvg (plain)   "
              f"x{value / wrapped:.2f} vs stock FedAvg (wrapped)")


if __name__ == "__main__":
    main()
