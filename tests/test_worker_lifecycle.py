"""TFF's `worker_binary` lives and dies with the Python process that started it (issue 12, item 6).

Each way for a process to end is tried on its own Python process that imports tff_sparsify, runs a
TFF computation and records its worker (pid and start time). These processes start together (one
TensorFlow import each, in parallel) when the first test needs them; every process they leave is
killed at the end of the module. The last tests run in this process.
"""
import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import compat
from tensorflow_federated.python.core.impl.executor_stacks import executor_factory as tff_executor_factory

READY_TIMEOUT = 240  # A TensorFlow import can take a minute on a loaded 2-core machine.
GONE_TIMEOUT = 10
EXIT_TIMEOUT = 20

CHILD = r"""
import os, sys, time
import psutil
import tensorflow as tf, tensorflow_federated as tff
import tff_sparsify
from tff_sparsify import compat

record, scenario = sys.argv[1], sys.argv[2]
workers = []

def run_a_computation():
    assert int(tff.tensorflow.computation(lambda: tf.constant(1))()) == 1
    (worker,) = [p for p in psutil.Process().children() if "worker_binary" in " ".join(p.cmdline())]
    workers.append(f"{worker.pid} {worker.create_time()}")

def ready():
    with open(record + ".tmp", "w") as f:
        f.write("\n".join(workers))
    os.replace(record + ".tmp", record)

run_a_computation()
if scenario == "wait":
    ready()
    time.sleep(600)
elif scenario == "raise":
    ready()
    raise RuntimeError("a run that fails")
elif scenario == "exit":
    ready()
    compat.configure_tff_runtime()  # Stops the first worker (TFF sends it SIGINT and waits).
    run_a_computation()
    ready()
"""


def _ignore_job_control_signals():
    # What `nohup ... &` in a shell script gives a job: SIGINT, SIGQUIT and SIGHUP ignored.
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def _default_signals():
    # The signals' default actions, whatever the test run inherited (`nohup` ignores SIGHUP, a shell's
    # `&` SIGINT): the scenarios test how the process ends on each signal.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


SCENARIOS = {
    "SIGTERM": ("wait", _default_signals),
    "SIGHUP": ("wait", _default_signals),
    "SIGKILL": ("wait", _default_signals),
    "SIGINT": ("wait", _default_signals),
    "exception": ("raise", None),
    "background": ("exit", _ignore_job_control_signals),
}


class Child:
    def __init__(self, name, tmp_path):
        scenario, preexec_fn = SCENARIOS[name]
        self.name, self.record = name, tmp_path / f"{name}.workers"
        self.stderr_path = tmp_path / f"{name}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(self.record), scenario],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=preexec_fn,
            )
        self.workers = []

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.record.exists():
            if self.process.poll() is not None:
                pytest.fail(f"{self.name}: exited with {self.process.returncode}\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no worker after {READY_TIMEOUT} s\n{self.stderr()}")
            time.sleep(0.2)
        self.read_workers()
        return self

    def read_workers(self):
        for line in self.record.read_text().splitlines()[len(self.workers) :]:
            pid, create_time = line.split()
            try:
                worker = psutil.Process(int(pid))
                if worker.create_time() != float(create_time):
                    raise psutil.NoSuchProcess(int(pid))
            except psutil.NoSuchProcess:
                worker = None  # Gone already.
            self.workers.append(worker)

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def cleanup(self):
        """Kills this scenario's process and its workers (only those: psutil knows their start times)."""
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for process in self.workers + descendants:
            if process is not None and _running(process):
                process.kill()


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_exit(child) -> int:
    try:
        return child.process.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    pytest.fail(f"{child.name}: the process hung for over {EXIT_TIMEOUT} s (stopping a worker or exiting)")


def _assert_gone(workers, message="worker_binary outlived its Python process"):
    workers = [w for w in workers if w is not None]
    deadline = time.monotonic() + GONE_TIMEOUT
    while any(_running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w.pid for w in workers if _running(w)], message


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("worker_lifecycle")
    started = {name: Child(name, tmp_path) for name in SCENARIOS}
    try:
        yield started
    finally:
        for child in started.values():
            child.cleanup()


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGKILL", "SIGINT"])
def test_the_worker_dies_when_its_process_gets_a_signal(children, signame):
    child = children[signame].wait_ready()
    (worker,) = child.workers
    assert worker is not None and _running(worker)
    child.process.send_signal(getattr(signal, signame))
    _wait_exit(child)
    _assert_gone(child.workers)


def test_the_worker_stops_when_its_process_fails(children):
    child = children["exception"].wait_ready()
    assert _wait_exit(child) == 1
    assert "a run that fails" in child.stderr()
    _assert_gone(child.workers)


def test_a_background_job_ignoring_sigint_replaces_its_worker_and_exits(children):
    # TFF stops a worker with SIGINT and waits without a timeout; a worker of `nohup ... &` ignores it.
    child = children["background"].wait_ready()
    assert _wait_exit(child) == 0, child.stderr()
    child.read_workers()
    assert len(child.workers) == 2
    _assert_gone(child.workers)


def _workers():
    """This process's workers, dead but not yet waited for included."""
    workers = {}
    for process in psutil.Process().children():
        try:
            if process.name() == "worker_binary":
                workers[process.pid] = process
        except psutil.NoSuchProcess:
            pass
    return workers


def test_a_worker_started_from_a_thread_outlives_that_thread():
    # The kernel's parent-death signal follows the thread that forked; a thread's end must not kill a
    # worker its context still uses. Here an async context starts its worker from a short-lived thread.
    context = tff.backends.native.create_async_local_cpp_execution_context()
    computation = tff.tensorflow.computation(lambda: tf.constant(1))
    before = _workers()

    def run():
        with tff.framework.get_context_stack().install(context):
            results.append(int(asyncio.run(computation())))

    results = []

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert results == [1]
    (worker,) = [w for pid, w in _workers().items() if pid not in before]
    try:
        time.sleep(0.5)
        assert _running(worker), "the worker died with the thread that started it"
        with tff.framework.get_context_stack().install(context):
            assert int(asyncio.run(computation())) == 1  # Same worker, from the main thread.
        assert _running(worker) and set(_workers()) - set(before) == {worker.pid}
    finally:
        del context
        gc.collect()
        if _running(worker):
            worker.kill()


def test_a_worker_started_before_tff_sparsify_was_imported_is_still_stopped(monkeypatch):
    context = tff.backends.native.create_sync_local_cpp_execution_context()
    before = _workers()
    with monkeypatch.context() as patch:
        patch.setattr(tff_executor_factory, "subprocess", subprocess)  # As before compat's import.
        with tff.framework.get_context_stack().install(context):
            assert int(tff.tensorflow.computation(lambda: tf.constant(1))()) == 1
    (worker,) = [w for pid, w in _workers().items() if pid not in before]
    try:
        del context
        gc.collect()  # TFF stops the worker of a collected context.
        _assert_gone([worker], "TFF did not stop the worker of a collected context")
    finally:
        if _running(worker):
            worker.kill()


def test_a_worker_that_outlasts_sigint_is_killed(monkeypatch):
    monkeypatch.setattr(compat, "WORKER_STOP_SECONDS", 0.5)
    script = "trap 'echo interrupted' INT; echo ready; while :; do sleep 0.1; done"
    process = compat._WorkerPopen(["/bin/sh", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        os.kill(process.pid, signal.SIGINT)  # What TFF does, then it waits without a timeout.
        start = time.monotonic()
        assert process.wait() == -signal.SIGKILL
        assert time.monotonic() - start < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
