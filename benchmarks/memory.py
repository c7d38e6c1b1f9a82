"""Peak memory (RSS) of a 100-client FedSparsify-Global run vs a 10-client one.

Runs `experiment.run` on non-IID Fashion-MNIST (label skew, 2 classes per client; digits when
../shared/data/fashion_mnist.npz is absent) for `--rounds` rounds of 1 local epoch with
  - 100 clients, participation 0.1 (10 clients per round, 600 examples each),
  - 10 clients, participation 1.0 (10 clients per round, 6,000 examples each),
each in a fresh Python process (so neither inherits the other's memory), and samples that process and
its children (TFF's `worker_binary`) every 0.1 s with psutil. Prints the peak RSS of each process and
the peak of their sum (not the sum of the peaks), with the wall time of each run.

    .venv/bin/python benchmarks/memory.py [--rounds 5]
"""
import argparse
import multiprocessing
import os
import tempfile
import threading
import time

import psutil

from tff_sparsify import compat, experiment

FASHION_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "fashion_mnist.npz")
INTERVAL_SECONDS = 0.1
MIB = 2**20


def run_experiment(config, output_dir):
    try:
        experiment.run(config, output_dir, progress=False)
    finally:
        compat.release_tff_runtime()


class PeakRss:
    """Samples the RSS of a process tree in a thread: peak per process name and of the tree's sum."""

    def __init__(self, pid):
        self.root = psutil.Process(pid)
        self.peaks = {}
        self.peak_total = 0
        self.children = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(INTERVAL_SECONDS):
            rss = {}
            try:
                children = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            self.children.update(children)
            for process in [self.root, *children]:
                try:
                    name = "python" if process == self.root else process.name()
                    rss[name] = rss.get(name, 0) + process.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            for name, value in rss.items():
                self.peaks[name] = max(self.peaks.get(name, 0), value)
            self.peak_total = max(self.peak_total, sum(rss.values()))

    def stop(self):
        self._stop.set()
        self._thread.join()


def measure(config):
    """Runs `config` in a spawned process; its peak RSS per process name and in total, and seconds."""
    with tempfile.TemporaryDirectory() as output_dir:
        process = multiprocessing.get_context("spawn").Process(target=run_experiment, args=(config, output_dir))
        started = time.perf_counter()
        process.start()
        sampler = PeakRss(process.pid)
        process.join()
        sampler.stop()
    for child in sampler.children:  # A worker_binary left by a failed run.
        if child.is_running():
            child.kill()
    if process.exitcode != 0:
        raise RuntimeError(f"the run exited with code {process.exitcode}")
    return sampler.peaks, sampler.peak_total, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    if os.path.exists(FASHION_MNIST):
        data = dict(dataset="fashion_mnist", data_path=os.path.abspath(FASHION_MNIST), partition="label_skew")
    else:  # The paper's deterministic shards cannot split digits' unequal classes label-pure.
        data = dict(dataset="digits", partition="label_skew_random")
    common = dict(algorithm="fedsparsify_global", classes_per_client=2,
                  rounds=args.rounds, local_epochs=1, **data)
    runs = {
        "100 clients, participation 0.1": experiment.ExperimentConfig(num_clients=100, participation=0.1, **common),
        "10 clients, participation 1.0": experiment.ExperimentConfig(num_clients=10, participation=1.0, **common),
    }
    print(f"dataset={data['dataset']} rounds={args.rounds} local_epochs=1; peak RSS in MiB, "
          f"sampled every {INTERVAL_SECONDS} s")
    print(f"{'run':32s} {'python':>8s} {'worker_binary':>14s} {'sum (peak)':>11s} {'seconds':>8s}")
    for name, config in runs.items():
        peaks, total, seconds = measure(config)
        print(f"{name:32s} {peaks.get('python', 0) / MIB:8.0f} {peaks.get('worker_binary', 0) / MIB:14.0f} "
              f"{total / MIB:11.0f} {seconds:8.1f}")
        others = {k: v for k, v in peaks.items() if k not in ("python", "worker_binary")}
        if others:
            print(f"  other child processes: {', '.join(f'{k} {v / MIB:.0f}' for k, v in others.items())}")
    compat.release_tff_runtime()


if __name__ == "__main__":
    main()
