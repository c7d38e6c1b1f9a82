"""TFF runtime set-up: one client computation per CPU core, and a worker that is freed on demand."""
import os

import psutil
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import compat


def _workers():
    return [p for p in psutil.Process().children(recursive=True) if "worker_binary" in " ".join(p.cmdline())]


def _run_a_computation():
    assert int(tff.tensorflow.computation(lambda: tf.constant(41) + 1)()) == 42


def test_the_runtime_runs_one_computation_per_core_and_is_released():
    compat.configure_tff_runtime()
    _run_a_computation()
    (worker,) = _workers()
    assert f"--max_concurrent_computation_calls={len(os.sched_getaffinity(0))}" in worker.cmdline()
    compat.configure_tff_runtime(max_concurrent_calls=3)
    worker.wait(timeout=30)  # The replaced runtime's worker is stopped...
    _run_a_computation()
    (worker,) = _workers()  # ...and the next computation starts one with the new limit.
    assert "--max_concurrent_computation_calls=3" in worker.cmdline()
    compat.release_tff_runtime()
    worker.wait(timeout=30)
    assert _workers() == []
