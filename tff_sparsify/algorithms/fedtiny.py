"""FedTiny (Huang et al., "Distributed Pruning Towards Tiny Neural Networks in Federated Learning",
ICDCS 2023, arXiv 2212.01977), as reconstructed from the authors' 2022 code, for density d = 1 - s_f:

- phase 0: the server pre-trains the seeded dense model on the labelled examples it holds out of the
  training data (`server_examples_per_class`, never the test split) for `pretrain_epochs` epochs of
  SGD at the clients' learning rate, and draws `candidates` coarse masks: per-layer densities in
  [0.5d, 1.5d] keeping d within 2%, each layer pruned by magnitude (`core.prune_grow`);
- phase 1: adaptive BatchNorm selection over the clients' validation subsets (a seeded
  `validation_fraction` of each client's examples, which it still trains on), `learning.abns`;
- phase 2: masked FedAvg of all weights and the BatchNorm statistics (`learning.compose`); the
  clients' optimizer state starts at zero every round and masked gradients are zero, so its slots
  stay zero where the mask is 0;
- phase 3 (`progressive`): after every `adjust_every` (Delta_R) rounds until `adjust_until` (T_end),
  one block of layers, cycling from the output, prunes and grows K_l = ceil(alpha_t nnz_l) weights
  from the clients' top-K inactive gradients (`TopKGradients`, averaged per client:
  `MeanPerClientFields`; `PruneAndGrow`).

Defaults are the authors' (C = 5, Delta_R = 10, T_end = 100, alpha = 0.1, block granularity, dense
stem, 10 recalibration epochs); the clients' optimizer is the run's (the authors' used Adam).
The ablations: `adaptive_bn=False` evaluates the candidates with the server's statistics,
`candidates=1` is plain layer-wise magnitude pruning, `progressive=False` keeps the coarse mask.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import tff_sparsify as ts
from tff_sparsify import checks
from tff_sparsify.algorithms.base import Algorithm, Pruned

GRANULARITIES = ("block", "entire", "layer")  # See `core.prune_grow.layer_blocks`.
SERVER_EXAMPLES_PER_CLASS = 5  # The authors' n_shots.
EVALUATION_VALUES = 2  # A client's exchange-B reply: its summed loss and its example count.


@dataclasses.dataclass(frozen=True)
class FedTinyOptions(Pruned):
    final_sparsity: float = 0.99  # 1 - d: the paper's regime is d = 0.01.
    candidates: int = 5  # C coarse masks to select from.
    adaptive_bn: bool = True  # Recalibrate BatchNorm per candidate before the selection (ABNS).
    recalibration_epochs: int = 10
    validation_fraction: float = 0.1  # Of each client's examples, for the selection.
    pretrain_epochs: int = 3  # On the server's held-out examples.
    dense_stem: bool = True  # The first layer stays dense (not counted in d).
    progressive: bool = True  # Prune and grow during training (phase 3).
    adjust_every: int = 10  # Delta_R.
    adjust_until: int = 100  # T_end.
    adjust_fraction: float = 0.1  # alpha.
    granularity: str = "block"  # Layers changed per adjustment: block, entire, layer.

    def __post_init__(self):
        super().__post_init__()
        for name in ("candidates", "recalibration_epochs", "pretrain_epochs", "adjust_every", "adjust_until"):
            checks.integer(name, getattr(self, name))
        checks.share("validation_fraction", self.validation_fraction)
        checks.share("adjust_fraction", self.adjust_fraction)
        checks.choice("granularity", self.granularity, GRANULARITIES)


def build(task, initial_weights, final_sparsity: float, adjustments=None, **optimizers):
    """FedTiny's learning process of `task` from `initial_weights` (the selected coarse mask; their
    kernels are masked at the start) with the `prune_grow.Adjustments` of phase 3 (None: the mask
    stays as it is)."""
    learning = ts.learning
    if adjustments is None:
        return learning.compose(task, initial_weights=initial_weights, **optimizers)
    return learning.compose(
        task,
        initial_weights=initial_weights,
        hooks=learning.ClientHooks(reports=(learning.TopKGradients(adjustments),)),
        mask_update=learning.PruneAndGrow(adjustments, final_sparsity),
        aggregator_factory=learning.MeanPerClientFields((learning.TopKGradients.name,)),
        **optimizers,
    )


def adjustments(setup):
    """The phase-3 schedule of the run's model and options (None without `progressive`)."""
    options = setup.options
    if not options.progressive:
        return None
    names = _layer_names(setup.task)
    first = _first_pruned(options.dense_stem)
    blocks = ts.core.prune_grow.layer_blocks(names[first:], options.granularity)
    return ts.core.prune_grow.Adjustments(
        options.adjust_every, options.adjust_until, options.adjust_fraction,
        tuple(tuple(first + i for i in block) for block in blocks),
    )


def coarse_candidates(kernels, density: float, count: int, dense_stem: bool, seed: int) -> list[list[np.ndarray]]:
    """`count` candidate mask lists (phase 0) for `kernels` (the pre-trained ones, layout order)."""
    first = _first_pruned(dense_stem)
    prune_grow = ts.core.prune_grow
    rng = np.random.default_rng(seed)
    sizes = [int(np.prod(k.shape)) for k in kernels[first:]]
    candidates = []
    for _ in range(count):
        densities = prune_grow.candidate_densities(sizes, density, rng)
        masks = prune_grow.layer_magnitude_masks(kernels[first:], densities)
        candidates.append([np.ones(k.shape, np.float32) for k in kernels[:first]] + [np.asarray(m) for m in masks])
    return candidates


def _initial_weights(setup):
    """Phases 0 and 1: the pre-trained weights within the selected candidate, with its statistics."""
    import tensorflow as tf  # Here: making weights loads TensorFlow.

    from tff_sparsify.learning import abns

    options, config, task = setup.options, setup.config, setup.task
    model = task.wrapped_keras_model()
    ts.compat.ready_pruning_steps(model)
    model.compile(optimizer=tf.keras.optimizers.SGD(config.client_learning_rate), loss=task.loss_fn())
    server_data = setup.federated.server_dataset(options.pretrain_epochs)
    model.fit(server_data.map(lambda batch: (batch["x"], batch["y"])), epochs=1, verbose=0)
    kernels = [k.numpy() for k in ts.models.prunable_weights(model)]
    candidates = coarse_candidates(kernels, 1 - options.final_sparsity, options.candidates, options.dense_stem,
                                   config.seed)
    validation = [setup.federated.validation_dataset(c, options.validation_fraction)
                  for c in range(setup.federated.num_clients)]
    selection = abns.select_candidate(
        task, ts.models.initial_model_weights(model), candidates, validation,
        recalibrate=options.adaptive_bn, epochs=options.recalibration_epochs,
    )
    print(f"fedtiny: candidate {selection.index} selected, validation losses "
          f"{', '.join(f'{loss:.6f}' for loss in selection.losses)}", flush=True)
    return selection.weights


def selection_cost(setup):
    """The communication of phases 0-1 before round 1 (`metrics.RoundCost`, every client, 4-byte
    values): exchange A sends the dense pre-trained model (weights and statistics) and C density
    vectors, and with ABNS the clients return C sets of statistics and their count; exchange B sends
    the C averaged statistics (with ABNS) and the clients return C (loss, count) pairs."""
    options, clients = setup.options, setup.federated.num_clients
    model = setup.task.wrapped_keras_model()
    statistics = sum(int(np.prod(v.shape)) for v in ts.models.batch_norm_statistics(model))
    params = statistics + sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    layers = len(ts.models.prunable_weights(model)) - _first_pruned(options.dense_stem)
    recalibrated = statistics if options.adaptive_bn else 0
    download = params + options.candidates * (layers + recalibrated)
    upload = options.candidates * ((recalibrated + 1 if options.adaptive_bn else 0) + EVALUATION_VALUES)
    return ts.core.metrics.RoundCost(clients * download, clients * upload,
                                     download_bytes=4 * clients * download, upload_bytes=4 * clients * upload)


def _first_pruned(dense_stem: bool) -> int:
    """The index of the first pruned kernel: the stem (kernel 0) stays dense with `dense_stem`."""
    return 1 if dense_stem else 0


def _layer_names(task) -> list[str]:
    return [wrapper.layer.name for wrapper in ts.models.pruning_wrappers(task.wrapped_keras_model())
            for _ in wrapper.pruning_vars]


ALGORITHMS = (
    Algorithm("fedtiny", "FedTiny (Huang et al., 2023): BatchNorm-selected coarse mask, then prune-and-grow "
              "from clients' top-K gradients",
              lambda setup, weights: build(setup.task, weights, setup.options.final_sparsity, adjustments(setup),
                                           **setup.optimizers()),
              options=FedTinyOptions, initial_weights=_initial_weights,
              server_examples_per_class=SERVER_EXAMPLES_PER_CLASS, setup_cost=selection_cost),
)
