"""Pruning at initialization, baselines of the FedSparsify paper (Stripelis et al., 2022, section 5):
SNIP (Lee et al., ICLR 2019) and GraSP (Wang et al., ICLR 2020) score the initial weights on one
randomly chosen client's data (`saliency`), keep the best (1 - s_f) fraction, and the federation
trains within these masks for the whole run."""
from __future__ import annotations

import dataclasses

import tff_sparsify as ts
from tff_sparsify import checks
from tff_sparsify.algorithms.base import Algorithm, Pruned


@dataclasses.dataclass(frozen=True)
class SaliencyOptions(Pruned):
    saliency_batches: int | None = None  # Batches of the chosen client scored (None: all).

    def __post_init__(self):
        super().__post_init__()
        if self.saliency_batches is not None:
            checks.integer("saliency_batches", self.saliency_batches)


def build(task, initial_weights, **optimizers):
    """The learning process of `task` trained within the masks of `initial_weights` for the whole run
    (their kernels are masked at the start)."""
    return ts.learning.compose(task, initial_weights=initial_weights, **optimizers)


def _initial_weights(mask_function: str):
    """The seeded initial weights with the masks `core.saliency.<mask_function>` computes at them."""

    def initial_weights(setup):
        model = setup.task.wrapped_keras_model()
        masks = getattr(ts.core.saliency, mask_function)(
            model, setup.federated.client_dataset(setup.chosen_client()), setup.options.final_sparsity,
            loss=setup.task.loss_fn(), num_batches=setup.options.saliency_batches,
        )
        return ts.core.saliency.model_weights_with_masks(model, masks)

    return initial_weights


def _build_process(setup, weights):
    return build(setup.task, weights, **setup.optimizers())


ALGORITHMS = (
    Algorithm("snip", "SNIP (Lee et al., 2019): masks by |g w| at initialization, fixed",
              _build_process, options=SaliencyOptions,
              initial_weights=_initial_weights("snip_masks")),
    Algorithm("grasp", "GraSP (Wang et al., 2020): masks by -w Hg at initialization, fixed",
              _build_process, options=SaliencyOptions,
              initial_weights=_initial_weights("grasp_masks")),
)
