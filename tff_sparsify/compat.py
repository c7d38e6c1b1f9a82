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
   its stdout open). `release_tff_runtime` frees it; it runs at exit.
6. On every training call TFMOT's wrapper increments its step, asserts it, evaluates its schedule
   and re-multiplies the kernel by the mask: this made a training step of the paper's FC model
   1.7-1.8x slower. FedSparsify keeps pruned weights at zero by itself, so `FedSparsifyPruneLowMagnitude`
   skips that work.
7. TFF's local C++ runtime runs all of a round's client computations at once by default; on a
   2-core machine, 10 clients contending for the cores made a round about 20% slower than running
   one per core. Importing tff_sparsify sets TFF's default context to `configure_tff_runtime()`
   (one computation per CPU core; the worker starts on first use). Call TFF's
   `tff.backends.native.set_sync_local_cpp_execution_context` afterwards to choose otherwise.
"""
from __future__ import annotations

import atexit
import gc
import inspect
import os

import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry, pruning_wrapper

PruneLowMagnitude = pruning_wrapper.PruneLowMagnitude


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


def _set_local_runtime(max_concurrent_calls: int | None) -> None:
    tff.backends.native.set_sync_local_cpp_execution_context(
        max_concurrent_computation_calls=max_concurrent_calls or len(os.sched_getaffinity(0))
    )


def configure_tff_runtime(max_concurrent_calls: int | None = None) -> None:
    """Makes TFF's default context a fresh local C++ runtime running at most `max_concurrent_calls`
    computations at a time (default: one per CPU core this process may use). A running
    `worker_binary` is stopped; the next computation starts a new one."""
    _set_local_runtime(max_concurrent_calls)
    gc.collect()  # Finalizes the replaced context, which stops its worker.


def release_tff_runtime() -> None:
    """Stops TFF's local `worker_binary` (TFF stays usable: the next computation starts a new one)."""
    configure_tff_runtime()


_set_local_runtime(None)  # At import no worker runs yet: no collection (0.2 s) is needed.


@atexit.register
def _release_tff_runtime_at_exit() -> None:
    # An execution context left for interpreter shutdown fails noisily in its __del__; leave none.
    tff.framework.set_default_context(runtime_error_context.RuntimeErrorContext())
    gc.collect()
