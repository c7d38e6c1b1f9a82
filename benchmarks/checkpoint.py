"""Per-round checkpoint cost: the runner's one-file checkpoint vs TFF's `tff.program.FileProgramStateManager`.

Both save the state of the paper's FashionMNIST process (FC 784-128-128-10, FedSparsify-Global) once
per round: the runner's `checkpoint.npz` (the process state and the 200-round history in one atomic
file, the round's commit point, plus history.json / history.csv rewritten from it), and TFF's
program-state manager (one SavedModel directory per version, keeping the latest). Prints the median
seconds per save of each and their ratio.

    .venv/bin/python benchmarks/checkpoint.py [--saves 15]
"""
import argparse
import asyncio
import statistics
import tempfile
import time

import numpy as np
import tensorflow_federated as tff

import tff_sparsify as ts
from tff_sparsify import experiment, learning, models
from tff_sparsify.core import schedules
from tff_sparsify.algorithms import fedsparsify_global


def median_seconds(save, saves: int) -> float:
    seconds = []
    for version in range(saves):
        started = time.perf_counter()
        save(version)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=15)
    args = parser.parse_args()
    ts.configure_runtime()
    images, labels = np.zeros((20, 28, 28), np.uint8), np.arange(20) % 10  # Only the shapes matter here.
    federated = ts.federate(ts.from_arrays(images, labels, images, labels), 2, "iid")
    task = learning.ModelTask(lambda: models.build_model("fc", (28, 28, 1), 10), federated.element_spec)
    process = fedsparsify_global.build(task, schedules.SparsitySchedule(0.9, 200))
    state = process.initialize()
    history = [{"round": r, "test_accuracy": 0.75, "sparsity": 0.9, "communication": {"upload_params": 10}}
               for r in range(1, 201)]
    with tempfile.TemporaryDirectory() as runner_dir, tempfile.TemporaryDirectory() as tff_dir:
        checkpoint = experiment._Checkpoint(runner_dir)
        ours = median_seconds(lambda version: checkpoint.save(history[-1], state, history), args.saves)
        manager = tff.program.FileProgramStateManager(tff_dir, keep_total=1)
        theirs = median_seconds(lambda version: asyncio.run(manager.save(state, version)), args.saves)
    print(f"runner checkpoint.npz + history files: {ours * 1000:8.1f} ms/save")
    print(f"tff.program.FileProgramStateManager:   {theirs * 1000:8.1f} ms/save (x{theirs / ours:.1f}; "
          "state only, the history would need a second write)")


if __name__ == "__main__":
    main()
