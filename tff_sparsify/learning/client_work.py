"""Client work that trains within the broadcast masks, with an algorithm's `hooks.ClientHooks`.

Each client assigns the broadcast `ModelWeights` (kernels, biases, TFMOT masks, BatchNorm statistics)
to its model and runs local SGD with the kernel gradients multiplied by the masks, so pruned weights
stay exactly zero and the update `initial - final` is exactly zero at pruned positions (TFF's sign
convention).

Every client sends its model: `ClientResult.update` is an `OrderedDict` with
- `weights`: the trainable weights' delta `initial - final`; with an after-training step (the
  client's own pruning, FedSparsify-Local), `final` is the model within the client's new masks;
- `masks` (with an after-training step): one binary mask per trainable tensor (all ones for biases),
  for the server's majority vote (paper eq. 2);
- one entry per report (e.g. `squared_gradients`, PruneFL; `top_k_gradients`, FedTiny), per
  prunable kernel in layout order; what a report puts on the wire (`ClientReport.finish`) is
  counted in the upload and in `report_params`;
- `statistics` (models with BatchNorm): the BatchNorm moving means and variances the client holds
  after local training, as values (not deltas). The aggregators average them example-weighted and
  the finalizer sets them (README, Measures, "BatchNorm statistics"; the authors' FedAvg over all
  weights).

`compute` measures the round's training FLOPs, summed over its clients (`train_flops`): per example
3 passes through the kernels at the broadcast masks (forward, activation gradient, weight gradient
at the kept positions; 2 FLOPs per multiply-add, `ModelTask.kernel_costs`), plus the dense weight
gradients a report needs (`ClientReport.gradient_flops`: PruneFL every step, FedTiny one batch of
the selected block in adjusting rounds); `dense_train_flops` is dense training of the same
examples. Biases, BatchNorm and activations are not counted (their cost is the same for every
algorithm and small beside the kernels').
`memory_bytes` is each client's on-device footprint while it trains (analytic, FedTiny's measure),
summed over the clients: the model and its gradient at the broadcast masks in their cheapest
encoding (`metrics.encoded_bytes`), the optimizer's slots per kept weight, the BatchNorm statistics
and the reports' buffers (`ClientReport.buffer_bytes`: PruneFL's dense gradient and sum of squares,
FedTiny's K entries); activations depend on the batch, not on the algorithm, and are reported apart.

A client whose update holds a NaN or an infinity (a diverging learning rate, a corrupt example) sends
zeros with weight 0, so the weighted aggregators leave it out (as TFF's own client work does); the
`nonfinite_clients` measurement counts such clients.

Measurements, summed over the round's clients, feed the communication-cost accounting (paper
appendix C, `tff_sparsify.core.metrics`), on one basis for every algorithm: the model sent.
`download_params` and `upload_params` count the parameters of the model received and of the model
sent (the kernel positions their masks keep, all other trainable weights, the BatchNorm
statistics), plus what the reports send, so dense FedAvg counts exactly 2 x clients x parameters
per round. `update_nonzero`,
for information, counts the nonzeros of the delta (zero wherever a client's data never reaches a
weight), which is not what the paper counts. `download_bytes` and `upload_bytes` are the sizes of
the cheapest lossless per-tensor encoding (dense, bitmap or coordinate list; `metrics.encoded_bytes`)
of the same models' values.
"""
from __future__ import annotations

import collections
import math

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.core import metrics, pruning
from tff_sparsify.learning.hooks import ClientHooks
from tff_sparsify.learning.task import ModelTask


def build_masked_client_work(
    task: ModelTask,
    optimizer: tff.learning.optimizers.Optimizer,
    hooks: ClientHooks = ClientHooks(),
) -> tff.learning.templates.ClientWorkProcess:
    """A `ClientWorkProcess` training within the masks, with `hooks` added. Its state is the process's
    round counter when an after-training step reads the round (clients prune to s(round + 1)), else
    empty."""
    layout = task.layout
    with tf.Graph().as_default():
        tff_model = task.tff_model()
        metrics_aggregation_fn = tff.learning.metrics.sum_then_finalize(tff_model.metric_finalizers())
    weights_type = tff.learning.models.weights_type_from_model(tff_model)
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(tff_model.input_spec))
    flops_per_weight = [2 * c for c in task.kernel_costs]  # A multiply-add is 2 FLOPs.
    optimizer_slots = _slots_per_weight(optimizer, weights_type)
    weights, statistics = (sum(math.prod(t.shape) for t in types) for types in (
        weights_type.trainable, layout.statistics(weights_type.non_trainable)))
    dense_memory_bytes = 4 * ((2 + optimizer_slots) * weights + statistics)  # Dense float32 training.

    def train(round_num, initial_weights, dataset):
        model = task.tff_model()
        model_weights = tff.learning.models.ModelWeights.from_model(model)
        trainable_specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in model_weights.trainable)

        @tf.function
        def local_training():
            tf.nest.map_structure(lambda v, w: v.assign(w), model_weights, initial_weights)
            masks = layout.full_masks(model_weights.trainable, layout.masks(initial_weights.non_trainable))

            def step(state, batch):
                num_examples, _, optimizer_state, reports = state
                with tf.GradientTape() as tape:
                    output = model.forward_pass(batch, training=True)
                gradients = tape.gradient(output.loss, model_weights.trainable)
                kernel_gradients = layout.kernels(gradients)
                reports = tuple(tuple(r.accumulate(total, kernel_gradients)) for r, total in zip(hooks.reports, reports))
                if hooks.gradient_transform:
                    gradients = hooks.gradient_transform(
                        gradients, model_weights.trainable, initial_weights.trainable
                    )
                gradients = tuple(g * m for g, m in zip(gradients, masks))
                optimizer_state, updated = optimizer.next(
                    optimizer_state, tuple(model_weights.trainable), gradients
                )
                for variable, value in zip(model_weights.trainable, updated):
                    variable.assign(value)
                batch_examples = tf.cast(output.num_examples, tf.int64)
                return num_examples + batch_examples, batch_examples, optimizer_state, reports

            kernels = layout.kernels(initial_weights.trainable)
            num_examples, last_batch, _, reports = dataset.reduce(
                (
                    tf.constant(0, tf.int64),
                    tf.constant(0, tf.int64),
                    optimizer.initialize(trainable_specs),
                    tuple(tuple(r.initial(kernels)) for r in hooks.reports),  # Tuples: lists would stack.
                ),
                step,
            )
            final = list(model_weights.trainable)
            broadcast_masks = layout.masks(initial_weights.non_trainable)
            kernel_masks = broadcast_masks
            if hooks.after_training:
                kernel_masks = hooks.after_training(round_num, layout.kernels(final), broadcast_masks)
                final = layout.replace_kernels(final, pruning.apply_masks(layout.kernels(final), kernel_masks))
            update = collections.OrderedDict(weights=[a - b for a, b in zip(initial_weights.trainable, final)])
            if hooks.after_training:
                update["masks"] = layout.full_masks(final, kernel_masks)
            report_params = report_bytes = tf.constant(0, tf.int64)
            train_flops = tf.cast(num_examples, tf.float64) * 3 * _masked_flops(broadcast_masks, flops_per_weight)
            for report, value in zip(hooks.reports, reports):
                update[report.name], params, size = report.finish(round_num, list(value), broadcast_masks)
                report_params, report_bytes = report_params + params, report_bytes + size
                train_flops += report.gradient_flops(round_num, broadcast_masks, flops_per_weight, num_examples,
                                                     last_batch)
            statistics = [tf.identity(s) for s in layout.statistics(model_weights.non_trainable)]
            if statistics:
                update["statistics"] = statistics
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(update)])
            result = tff.learning.templates.ClientResult(  # A non-finite update is left out, as in TFF.
                update=tf.nest.map_structure(lambda t: tf.where(finite, t, tf.zeros_like(t)), update),
                update_weight=tf.where(finite, tf.cast(num_examples, tf.float32), 0.0),
            )
            broadcast_statistics = layout.statistics(initial_weights.non_trainable)
            communication = collections.OrderedDict(
                clients=tf.constant(1, tf.int64),
                download_params=params_sent(
                    layout, initial_weights.trainable, broadcast_masks, broadcast_statistics
                ),
                upload_params=params_sent(layout, final, kernel_masks, statistics) + report_params,
                report_params=report_params,
                update_nonzero=pruning.count_nonzero(update["weights"]),
                download_bytes=metrics.encoded_bytes([*initial_weights.trainable, *broadcast_statistics]),
                upload_bytes=metrics.encoded_bytes([*final, *statistics]) + report_bytes,
            )
            model_bytes = metrics.encoded_bytes(initial_weights.trainable)
            kept = params_sent(layout, initial_weights.trainable, broadcast_masks, [])  # Without statistics.
            compute = collections.OrderedDict(
                memory_bytes=(2 * model_bytes + 4 * optimizer_slots * kept  # Weights, gradients, slots.
                              + 4 * sum(tf.size(s, out_type=tf.int64) for s in broadcast_statistics)
                              + sum(r.buffer_bytes(round_num, broadcast_masks) for r in hooks.reports)),
                dense_memory_bytes=tf.constant(dense_memory_bytes, tf.int64),
                train_flops=train_flops,
                dense_train_flops=tf.cast(num_examples, tf.float64) * 3 * sum(
                    c * float(k.shape.num_elements()) for c, k in zip(flops_per_weight, kernels)),
            )
            nonfinite = tf.cast(tf.logical_not(finite), tf.int32)
            return result, model.report_local_unfinalized_metrics(), communication, compute, nonfinite

        return local_training()

    if hooks.counts_rounds:
        client_update = tff.tensorflow.computation(train, tf.int32, weights_type, data_type)

        @tff.federated_computation
        def initialize():
            return tff.federated_value(0, tff.SERVER)
    else:
        client_update = tff.tensorflow.computation(
            lambda initial_weights, dataset: train(None, initial_weights, dataset), weights_type, data_type
        )

        @tff.federated_computation
        def initialize():
            return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(
        initialize.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        if hooks.counts_rounds:
            arguments = (tff.federated_broadcast(state), weights, client_data)
            state = tff.federated_map(tff.tensorflow.computation(lambda r: r + 1, tf.int32), state)
        else:
            arguments = (weights, client_data)
        results, model_outputs, communication, compute, nonfinite = tff.federated_map(client_update, arguments)
        measurements = tff.federated_zip(
            collections.OrderedDict(
                train=metrics_aggregation_fn(model_outputs),
                communication=tff.federated_sum(communication),
                compute=tff.federated_sum(compute),
                nonfinite_clients=tff.federated_sum(nonfinite),
            )
        )
        return tff.templates.MeasuredProcessOutput(state, results, measurements)

    return tff.learning.templates.ClientWorkProcess(initialize, next_fn)


def _slots_per_weight(optimizer, weights_type) -> int:
    """How many values the optimizer keeps per trainable weight (SGD 0, momentum 1, Adam 2)."""
    specs = tuple(tf.TensorSpec(t.shape, t.dtype) for t in weights_type.trainable)
    with tf.Graph().as_default():
        state = optimizer.initialize(specs)
    total = sum(t.shape.num_elements() for t in tf.nest.flatten(state) if getattr(t, "shape", ()) != ())
    return total // sum(s.shape.num_elements() for s in specs)


def _masked_flops(masks, flops_per_weight) -> tf.Tensor:
    """Per example, the FLOPs of one pass through the kernels at their masks: sum_l flops_l nnz_l.
    Training costs 3 passes (forward, activation gradient, weight gradient at the kept positions)."""
    return tf.add_n([c * tf.cast(tf.math.count_nonzero(m), tf.float64) for m, c in zip(masks, flops_per_weight)])


def params_sent(layout, trainable, kernel_masks, statistics) -> tf.Tensor:
    """Parameters of a sparse model as sent (paper appendix C): the kernel positions its masks keep,
    every other trainable weight and the BatchNorm statistics; an int64 scalar. A kept weight that
    is 0 by chance (a zero-initialized bias) is sent all the same, so a dense model counts fully."""
    kept = pruning.count_nonzero(layout.full_masks(trainable, kernel_masks))
    return kept + sum(tf.size(s, out_type=tf.int64) for s in statistics)
