"""Every workaround specific to TFF 0.87 and TFMOT 0.7.5, in one place.

A port to newer TFF or TFMOT releases should only need to touch this module.

1. TFMOT's pruning wrapper class is not public in 0.7.5.
2. The wrapper's masks must be controlled by FedSparsify (the server or the client's pruning step),
   never by TFMOT's own schedule: `ServerControlledSchedule` never updates them.
3. The wrapper's `pruning_step` starts at -1; on each training call it is incremented and then
   asserted to be >= 1, which Keras's `UpdatePruningStep` callback normally ensures. TFF runs no
   callbacks and traces `model_fn` into a graph (an `.assign` there is dropped), so the step must be
   set in the initial model weights instead: `with_ready_pruning_steps`. (FedSparsify's own wrapper,
   item 6, asserts nothing; the steps are set anyway, so TFMOT's stock wrapper trains too.)
4. TFMOT has no public test for "this layer has weights to prune"; `has_prunable_weights` reads its
   registry, so that only such layers get a wrapper (each wrapper costs work on every training step).
5. TFF's local C++ runtime starts a `worker_binary` process that outlives the interpreter (and keeps
   its stdout open). `release_tff_runtime` frees it; it runs at exit. See also item 8.
6. On every training call TFMOT's wrapper increments its step, asserts it, evaluates its schedule
   and re-multiplies the kernel by the mask: this made a training step of the paper's FC model
   1.7-1.8x slower. FedSparsify keeps pruned weights at zero by itself, so `FedSparsifyPruneLowMagnitude`
   skips that work.
7. TFF's local C++ runtime runs all of a round's client computations at once by default; on a
   2-core machine, 10 clients contending for the cores made a round about 20% slower than running
   one per core. `configure_tff_runtime()` (the Python API's `tff_sparsify.configure_runtime`) sets
   TFF's default context to one computation per CPU core (the worker starts on first use);
   `experiment.run` calls it unless the program did. Importing tff_sparsify leaves TFF's context as
   it is.
8. TFF starts the worker with a plain `subprocess.Popen` and stops it with SIGINT followed by a
   `wait()` without timeout (when its context is collected, e.g. at exit, and when it restarts one).
   So a worker outlived a process ended by SIGTERM, SIGHUP or SIGKILL, and a process whose SIGINT
   was ignored when it started (a job started with `&` by a shell script, or `nohup`) hung forever
   at exit: the worker inherits the ignored SIGINT. Importing compat replaces the `subprocess` name
   in TFF's `executor_factory` module by one whose `Popen` is `_WorkerPopen` (`configure_tff_runtime`
   does it):
   - the kernel kills the worker (SIGKILL) when its parent dies (`prctl(PR_SET_PDEATHSIG)`, Linux),
     set by a tiny interpreter that then becomes the worker (`_DIE_WITH_PARENT`; a `preexec_fn`
     would make `subprocess` fork this many-threaded process and run gRPC's fork handlers). That
     signal follows the *thread* that started the worker, and TFF starts it from whichever thread
     runs its event loop (a sync context's own thread; an async context's caller), so
     `_WorkerPopen` always starts it from `_LAUNCHER`'s thread, which lives as long as the process;
   - its `wait()` without timeout, which TFF only calls right after its SIGINT, is bounded: a worker
     ignoring SIGINT is killed at once, any other after `WORKER_STOP_SECONDS`.
   compat installs no signal handler: SIGTERM and SIGHUP end the process as before, and the kernel
   then kills the worker (the command line turns them into a clean stop, `cli._signals_stop_the_command`). The worker keeps the signal dispositions it inherits, so Ctrl-C in the
   terminal of a script that started a job with `&` still stops neither the job nor its worker.
   A worker started before `configure_tff_runtime` is a plain `Popen`: TFF still stops it, but it
   does not die with its parent. Importing compat installs this (and frees the worker at exit, item
   5), without changing TFF's context.
9. `tff.learning.models.from_keras_model` warns that a BatchNorm model's statistics "won't be updated
   during the training", for every process built: ours federate them (`models.batch_norm_statistics`),
   so `from_keras_model` silences it where it is called.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import functools
import gc
import inspect
import os
import queue
import signal
import subprocess
import sys
import threading
import types
import warnings

import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context
from tensorflow_federated.python.core.impl.executor_stacks import executor_factory as tff_executor_factory
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry, pruning_wrapper

PruneLowMagnitude = pruning_wrapper.PruneLowMagnitude


def from_keras_model(keras_model: tf.keras.Model, **kwargs) -> tff.learning.models.VariableModel:
    """`tff.learning.models.from_keras_model` without its BatchNorm warning (item 9)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Batch Normalization contains non-trainable variables", UserWarning)
        return tff.learning.models.from_keras_model(keras_model, **kwargs)


@tf.keras.utils.register_keras_serializable(package="tff_sparsify")
class FedSparsifyPruneLowMagnitude(PruneLowMagnitude):
    """TFMOT's pruning wrapper (same variables: mask, threshold, pruning_step; same `strip_pruning`)
    whose forward pass is the wrapped layer's, without the per-step bookkeeping.

    FedSparsify makes that bookkeeping redundant: every kernel it sends is already multiplied by its
    mask (the finalizers and the initial weights apply the masks), and its client work multiplies
    the gradients by the masks, so pruned weights stay exactly zero through local training. Do not
    train it with plain Keras `fit` on a pruned model: nothing would hold pruned weights at zero
    (TFMOT's own `prune_low_magnitude` does that there).
    """

    def call(self, inputs, training=None, **kwargs):
        if "training" in inspect.signature(self.layer.call).parameters:
            kwargs["training"] = training
        return self.layer.call(inputs, **kwargs)


# The wrapper increments the step before asserting step >= 1, so 0 is the smallest valid start.
READY_PRUNING_STEP = 0


class ServerControlledSchedule(tfmot.sparsity.keras.PruningSchedule):
    """A TFMOT pruning schedule that never touches the masks; FedSparsify writes them."""

    def __call__(self, step):
        return tf.constant(False), tf.constant(0.0, tf.float32)

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {}}


def has_prunable_weights(layer: tf.keras.layers.Layer) -> bool:
    """Whether TFMOT would prune some weight of `layer` (e.g. Dense and Conv kernels)."""
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
        return True
    registry = prune_registry.PruneRegistry
    if registry._is_rnn_layer(layer) or registry._is_mha_layer(layer):  # pylint: disable=protected-access
        return registry.supports(layer)
    return registry.supports(layer) and bool(registry._weight_names(layer))  # pylint: disable=protected-access


def prunes_nothing(layer: tf.keras.layers.Layer) -> bool:
    """Whether TFMOT knows `layer` and deliberately prunes none of its weights (BatchNorm,
    LayerNormalization, Embedding, ...), as opposed to not knowing it."""
    registry = prune_registry.PruneRegistry
    return registry.supports(layer) and not registry._weight_names(layer)  # pylint: disable=protected-access


def is_pruning_step(variable: tf.Variable) -> bool:
    """Whether `variable` is a TFMOT wrapper's `pruning_step` counter."""
    return variable.dtype == tf.int64 and variable.name.split("/")[-1].startswith("pruning_step")


def with_ready_pruning_steps(keras_model: tf.keras.Model) -> tff.learning.models.ModelWeights:
    """`ModelWeights` of `keras_model` with every pruning step set so that training can start.

    Works eagerly (use with `LearningProcess.set_model_weights`) and inside a TFF computation (use as
    the process's initial model weights).
    """
    non_trainable = [
        tf.constant(READY_PRUNING_STEP, tf.int64) if is_pruning_step(v) else tf.identity(v)
        for v in keras_model.non_trainable_weights
    ]
    trainable = [tf.identity(v) for v in keras_model.trainable_weights]
    return tff.learning.models.ModelWeights(trainable=trainable, non_trainable=non_trainable)


def ready_pruning_steps(keras_model: tf.keras.Model) -> None:
    """Sets every pruning step of an eager Keras model so that `fit` works without TFMOT's callback."""
    for variable in keras_model.non_trainable_weights:
        if is_pruning_step(variable):
            variable.assign(READY_PRUNING_STEP)


# TFF's worker and the process that starts it: item 8.

# How long a worker may take to stop after TFF's SIGINT before it is killed.
WORKER_STOP_SECONDS = 5.0

# `python -I -S -c _DIE_WITH_PARENT <parent pid> <worker command>`: asks the kernel to SIGKILL this
# process when the thread that started it ends, then executes the worker (which keeps that request).
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, ctypes.c_ulong(signal.SIGKILL))  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # The parent died before the prctl: no signal would come.
    os._exit(1)
for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores these; subprocess restores them for a child.
    signal.signal(getattr(signal, name), signal.SIG_DFL)
os.execv(sys.argv[2], sys.argv[2:])
"""
_CAN_DIE_WITH_PARENT = sys.platform.startswith("linux") and bool(sys.executable)


class _Launcher:
    """Runs functions on one daemon thread, started on first use, that lives as long as the process
    (a forked child gets a new one)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue | None = None

    def run(self, function):
        with self._lock:
            if self._requests is None:
                self._requests = queue.SimpleQueue()
                threading.Thread(
                    target=self._serve, args=(self._requests,), name="tff-worker-launcher", daemon=True
                ).start()
            requests = self._requests
        done = concurrent.futures.Future()
        requests.put((function, done))
        return done.result()

    @staticmethod
    def _serve(requests: queue.SimpleQueue) -> None:
        while True:
            function, done = requests.get()
            try:
                done.set_result(function())
            except BaseException as error:  # pylint: disable=broad-except
                done.set_exception(error)

    def forget_thread(self) -> None:
        self._lock = threading.Lock()
        self._requests = None


_LAUNCHER = _Launcher()
os.register_at_fork(after_in_child=_LAUNCHER.forget_thread)


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both.
        return False
    return True


def _ignores_signal(pid: int, signum: int) -> bool:
    """Whether process `pid` ignores `signum` (read from /proc; False when unknown)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            ignored = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(ignored >> (signum - 1) & 1)


class _AnyPopen(type):
    """`isinstance(process, _WorkerPopen)` holds for any `Popen`: TFF checks that before stopping a
    worker, and one started before compat was imported must still be stopped."""

    def __instancecheck__(cls, instance):
        return isinstance(instance, subprocess.Popen)


class _WorkerPopen(subprocess.Popen, metaclass=_AnyPopen):
    """TFF's worker process: dies with this process, and stops within `WORKER_STOP_SECONDS`."""

    def __init__(self, args, **kwargs):
        for name in ("stdout", "stderr"):  # TFF passes sys.stdout/err, which may be in-memory (pytest, IPython).
            stream = kwargs.get(name)
            if stream is not None and not isinstance(stream, int) and not _has_fileno(stream):
                kwargs[name] = None
        if _CAN_DIE_WITH_PARENT:
            args = [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *args]
        _LAUNCHER.run(functools.partial(super().__init__, args, **kwargs))

    def wait(self, timeout=None):
        if timeout is None and self.returncode is None:
            # TFF waits without a timeout only right after sending SIGINT to stop the worker.
            if _ignores_signal(self.pid, signal.SIGINT):
                self.kill()
            try:
                return super().wait(WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
        return super().wait(timeout)


class _TffSubprocess(types.ModuleType):
    """`subprocess` as TFF's `executor_factory` module sees it: its `Popen` is `_WorkerPopen`."""

    Popen = _WorkerPopen

    def __getattr__(self, name):
        return getattr(subprocess, name)


def worker_process(args: list[str], **kwargs) -> subprocess.Popen:
    """`subprocess.Popen(args, **kwargs)` for a TFF worker that dies with this process (item 8)."""
    return _WorkerPopen(args, **kwargs)


def _launch_tff_workers_with_this_process() -> None:
    if tff_executor_factory.subprocess is subprocess:
        tff_executor_factory.subprocess = _TffSubprocess("subprocess")


def _set_local_runtime(max_concurrent_calls: int | None) -> None:
    tff.backends.native.set_sync_local_cpp_execution_context(
        max_concurrent_computation_calls=max_concurrent_calls or len(os.sched_getaffinity(0))
    )


def configure_tff_runtime(max_concurrent_calls: int | None = None) -> None:
    """Makes TFF's default context a fresh local C++ runtime running at most `max_concurrent_calls`
    computations at a time (default: one per CPU core this process may use), whose worker dies with
    this process (item 8). A running `worker_binary` is stopped; the next computation starts a new
    one; at exit it is released."""
    global _configured, _max_concurrent_calls
    _max_concurrent_calls = max_concurrent_calls
    _set_local_runtime(max_concurrent_calls)
    gc.collect()  # Finalizes the replaced context, which stops its worker.
    _configured = True


def configure_tff_runtime_once() -> None:
    """`configure_tff_runtime()` unless this process called it already (keeps the program's choice)."""
    if not _configured:
        configure_tff_runtime()


def release_tff_runtime() -> None:
    """Stops TFF's local `worker_binary` (TFF stays usable, as configured: the next computation starts
    a new one)."""
    configure_tff_runtime(_max_concurrent_calls)


_configured = False
_max_concurrent_calls = None
_launch_tff_workers_with_this_process()  # Items 5 and 8: safer workers; TFF's context is left as it is.


@atexit.register
def _release_tff_runtime_at_exit() -> None:
    # An execution context left for interpreter shutdown fails noisily in its __del__; leave none.
    tff.framework.set_default_context(runtime_error_context.RuntimeErrorContext())
    gc.collect()
