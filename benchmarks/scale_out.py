"""Round time of a heavy round across TFF workers (`tff_sparsify.distributed`), in one run:

  - 1 worker pinned to one core (`taskset -c 0`),
  - 2 workers, each pinned to its own core (this machine's stand-in for 2 machines; goal >= 1.7x),
  - the ordinary single process (TFF's local runtime, both cores),
  - 1 worker on both cores: beside the single process, the distributed path's own per-round cost
    (state transfers through the driver, the mergeable context's extra calls),

with the one-off compilation to TFF's mergeable form and the first round timed apart. The heavy round:
FedAvg of the paper's CIFAR CNN (BatchNorm, 1.6 M parameters) on real FashionMNIST (digits when
absent), 10 clients of 300 examples (IID), 1 local epoch. Also prints the bytes of the model and of the
clients' updates, from which RESULTS.md projects larger federations. The workers run on this
machine and listen on every interface: run it on a machine whose network you trust, or inside
`unshare -rn sh -c 'ip link set lo up && ...'`.

    .venv/bin/python benchmarks/scale_out.py [--rounds 4] [--examples-per-class 300]
"""
import argparse
import os
import statistics
import time

import numpy as np
import tensorflow as tf

import tff_sparsify as ts
from tff_sparsify import algorithms, data, distributed, learning, models
from tff_sparsify.config import ExperimentConfig
from tff_sparsify.learning import worker_data

FASHION_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "fashion_mnist.npz")
CLIENTS = 10


def build(federated):
    config = ExperimentConfig(algorithm="fedavg", dataset=federated.dataset.name, model="cnn", num_clients=CLIENTS,
                              local_epochs=1)
    dataset = federated.dataset
    task = learning.ModelTask(lambda: models.build_model("cnn", dataset.input_shape, dataset.num_classes),
                              federated.element_spec)
    setup = algorithms.Setup(config, task, federated)
    tf.keras.utils.set_random_seed(0)
    weights = models.initial_model_weights(task.wrapped_keras_model())
    return algorithms.get("fedavg").build_process(setup, weights), weights


def time_rounds(next_round, process, weights, client_data, rounds):
    """(first round's seconds, median of the next `rounds` rounds)."""
    state = process.set_model_weights(process.initialize(), weights)
    times = []
    for round_num in range(1, rounds + 2):
        sources = client_data.sources(list(range(CLIENTS)), round_num)
        started = time.perf_counter()
        state = next_round(state, sources).state
        times.append(time.perf_counter() - started)
    return times[0], statistics.median(times[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds after the first")
    parser.add_argument("--examples-per-class", type=int, default=300, help="FashionMNIST examples of each class")
    args = parser.parse_args()
    source = dict(name="fashion_mnist", path=FASHION_MNIST) if os.path.exists(FASHION_MNIST) else dict(name="digits")
    dataset = data.load_dataset(source["name"], path=source.get("path"))
    if source["name"] == "fashion_mnist":
        dataset = dataset.first_per_class(args.examples_per_class)
    federated = data.federate(dataset, CLIENTS, batch_size=32, seed=0)
    ts.configure_runtime()
    results = {}
    with worker_data.WorkerClientData(federated) as client_data:
        process, weights = build(federated)
        process = client_data.compose(process, 1)
        results["single process (2 cores)"] = time_rounds(process.next, process, weights, client_data, args.rounds)
        for label, cores in (("1 worker, 1 core", ["0"]), ("2 workers, 1 core each", ["0", "1"]),
                             ("1 worker, 2 cores", ["0,1"])):
            workers = distributed.LocalWorkers(len(cores), calls_per_worker=len(cores[0].split(",")), cpus=cores)
            try:
                with distributed.Cluster(workers.addresses) as cluster:
                    started = time.perf_counter()
                    distributed.check_splittable(process.next, "fedavg")
                    compile_seconds = time.perf_counter() - started
                    results[label] = time_rounds(lambda s, d: cluster.call(process.next, s, d), process, weights,
                                                 client_data, args.rounds)
            finally:
                workers.close()
            print(f"{label}: compilation to mergeable form {compile_seconds:.1f} s", flush=True)
    params = sum(int(np.prod(np.shape(w))) for w in (*weights.trainable, *weights.non_trainable))
    print(f"\nheavy round: FedAvg, CNN ({params:,} values in ModelWeights, {4 * params / 1e6:.1f} MB float32), "
          f"{CLIENTS} clients x {len(federated.partition.client_indices[0])} {dataset.name} examples, 1 epoch")
    one = results["1 worker, 1 core"][1]
    for label, (first, median) in results.items():
        print(f"{label:28s} first round {first:6.1f} s   median round {median:6.2f} s   "
              f"speed-up vs 1 worker on 1 core x{one / median:.2f}")
    overhead = results["1 worker, 2 cores"][1] - results["single process (2 cores)"][1]
    print(f"distributed path's own cost per round (1 worker on 2 cores - single process): {overhead:+.2f} s")


if __name__ == "__main__":
    main()
