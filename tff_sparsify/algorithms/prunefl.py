"""PruneFL (Jiang et al., 2022, "Model Pruning Enables Efficient Federated Learning on Edge Devices"),
at the fixed density 1 - s_f as in the FedSparsify authors' comparison: the masks are learned at one
client before training (one local epoch of SGD, then global magnitude pruning to s_f; the original's
initial pruning with 5 reconfigurations is reduced to this single prune), clients report their summed
squared dense gradients, and every `readjust_every` rounds the server keeps the (1 - s_f) N positions
of highest squared gradient per unit of cost, pruned positions included (regrowth). The original's
adaptive model-size selection at each readjustment is not implemented."""
from __future__ import annotations

import dataclasses

import tff_sparsify as ts
from tff_sparsify import checks
from tff_sparsify.algorithms.base import Algorithm, Pruned


@dataclasses.dataclass(frozen=True)
class PruneFLOptions(Pruned):
    readjust_every: int = 50  # Rounds between mask readjustments (paper: 50).

    def __post_init__(self):
        super().__post_init__()
        checks.integer("readjust_every", self.readjust_every)


def build(task, initial_weights, final_sparsity: float, *, readjust_every: int = 50, **optimizers):
    """PruneFL's learning process of `task` from the masks of `initial_weights` (their kernels are
    masked at the start), readjusted every `readjust_every` rounds by squared gradient over the
    kernels' per-weight cost (`ModelTask.kernel_costs`)."""
    learning = ts.learning
    return learning.compose(
        task,
        initial_weights=initial_weights,
        hooks=learning.ClientHooks(reports=(learning.SquaredGradients(readjust_every),)),
        mask_update=learning.Readjust(final_sparsity, readjust_every, task.kernel_costs),
        **optimizers,
    )


def _initial_weights(setup):
    """The seeded initial weights after one local epoch of plain SGD at the chosen client, pruned to
    s_f by global magnitude."""
    import tensorflow as tf  # Here: making weights loads TensorFlow.

    model = setup.task.wrapped_keras_model()
    dataset = setup.federated.client_dataset(setup.chosen_client())
    ts.compat.ready_pruning_steps(model)
    model.compile(optimizer=tf.keras.optimizers.SGD(setup.config.client_learning_rate), loss=setup.task.loss_fn())
    model.fit(dataset.map(lambda batch: (batch["x"], batch["y"])), epochs=1, verbose=0)
    masks = ts.core.pruning.magnitude_masks(ts.models.prunable_weights(model), setup.options.final_sparsity)
    return ts.core.saliency.model_weights_with_masks(model, masks)


ALGORITHMS = (
    Algorithm("prunefl", "PruneFL (Jiang et al., 2022) at fixed density: masks readjusted by squared gradient",
              lambda setup, weights: build(setup.task, weights, setup.options.final_sparsity,
                                           readjust_every=setup.options.readjust_every, **setup.optimizers()),
              options=PruneFLOptions, initial_weights=_initial_weights),
)
