"""TFF runtime set-up, done explicitly: one client computation per CPU core, and a worker that is freed
on demand; importing the library changes neither TFF's context nor the process's logging."""
import os
import subprocess
import sys

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


def test_importing_leaves_tff_alone_and_configure_runtime_sets_one_computation_per_core():
    script = (
        "import os, psutil, tensorflow as tf, tensorflow_federated as tff\n"
        "before, logs = tff.framework.get_context_stack().current, dict(os.environ)\n"
        "import tff_sparsify as ts, tff_sparsify.experiment, tff_sparsify.algorithms\n"
        "print(tff.framework.get_context_stack().current is before, dict(os.environ) == logs)\n"
        "ts.configure_runtime()\n"
        "assert int(tff.tensorflow.computation(lambda: tf.constant(1))()) == 1\n"
        "print(*[a for p in psutil.Process().children(recursive=True) for a in p.cmdline() if 'concurrent' in a])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            check=True, env=env)
    assert result.stdout.split() == ["True", "True",
                                     f"--max_concurrent_computation_calls={len(os.sched_getaffinity(0))}"]


def test_the_package_and_its_command_line_answer_a_usage_error_without_tensorflow():
    script = (
        "import sys\n"
        "import tff_sparsify\n"
        "from tff_sparsify import cli\n"
        "try:\n"
        "    cli.main(['run', '--seed', '-1'])\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "print(code, 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.split() == ["2", "False"]
    assert "--seed must be an integer in [0, 2**32 - 1], got -1" in result.stderr


def test_the_command_line_prints_no_tensorflow_cpu_noise():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", "import tff_sparsify.cli, tff_sparsify.experiment"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "Unable to register" not in result.stderr, result.stderr
