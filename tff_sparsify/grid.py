"""The paper's experiment grid (section 5, appendix B): every environment, federation, data
distribution, algorithm and final sparsity, as named cells of `ExperimentConfig`, plus the
reproduction table of finished cells beside the paper's numbers (appendix C, table 2).

A cell is named `<group>/<run>`: the group is the environment, distribution and federation
(`fashion_mnist_noniid2`, `cifar10_iid_100clients`), the run the algorithm and its final sparsity
(`fedavg`, `global_0.9`, `local_0.9`, `snip_0.95`). Its results live in `<runs_dir>/<group>/<run>`,
so a grid is resumed by running the same cells again (`experiment.run` resumes every run).
Hyperparameters are the paper's (section 5, appendix B); CIFAR-100's client SGD uses Nesterov
momentum (`tff_sparsify.optimizers`).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
from typing import Callable, Iterable

from tff_sparsify import algorithms, files, layout
from tff_sparsify.config import MEAN_ACCURACY, ExperimentConfig, last_rounds_label

# TensorFlow loads only when cells run or are summarized (`experiment` and `report` are imported
# there), so selecting and listing cells, and the command line's errors about them, answer at once.


@dataclasses.dataclass(frozen=True)
class Environment:
    """A dataset with the paper's model and client training hyperparameters."""

    dataset: str
    rounds: int
    local_epochs: int
    batch_size: int
    client_learning_rate: float
    client_momentum: float
    client_nesterov: bool
    noniid_classes: int  # Label skew: classes per client in the non-IID distribution.


ENVIRONMENTS = {
    "fashion_mnist": Environment("fashion_mnist", 200, 4, 32, 0.02, 0.0, False, 2),
    "cifar10": Environment("cifar10", 200, 4, 32, 0.005, 0.75, False, 5),
    "cifar100": Environment("cifar100", 100, 4, 128, 0.01, 0.9, True, 50),
}
FEDERATIONS = ((10, 1.0), (100, 0.1))  # (clients, participation): all 10, or 10 of 100 per round.
DISTRIBUTIONS = ("iid", "noniid")
SPARSITIES = (0.8, 0.85, 0.9, 0.95, 0.99)
PAPER_ALGORITHMS = ("fedavg", "fedprox", "fedsparsify_global", "fedsparsify_local", "oneshot",
                    "oneshot_finetune", "random", "snip", "grasp", "prunefl")  # Paper section 5.

# Paper appendix C, table 2: FashionMNIST, 10 clients, non-IID, FedSparsify-Global by final sparsity
# (0.0 = FedAvg): accuracy, nonzero parameters, gzip model size (MB), communication (millions).
PAPER_RESULTS = {
    "fashion_mnist_noniid2": {
        "fedavg": (0.7489, 118_282, 0.434, 473),
        "global_0.8": (0.740, 23_657, 0.109, 190),
        "global_0.85": (0.735, 17_743, 0.082, 173),
        "global_0.9": (0.749, 11_829, 0.056, 155),
        "global_0.95": (0.735, 5_915, 0.029, 137),
        "global_0.99": (0.687, 1_183, 0.008, 123),
    },
}


def group_name(environment: str, num_clients: int, distribution: str) -> str:
    """`fashion_mnist_noniid2`, `cifar10_iid_100clients`, ... (10 clients need no suffix)."""
    skew = "iid" if distribution == "iid" else f"noniid{ENVIRONMENTS[environment].noniid_classes}"
    return f"{environment}_{skew}" + ("" if num_clients == 10 else f"_{num_clients}clients")


def run_name(algorithm: str, final_sparsity: float | None = None) -> str:
    """`fedavg`, `global_0.9`, `local_0.95`, `snip_0.8`, ..."""
    spec = algorithms.get(algorithm)
    prefix = spec.run_prefix or algorithm
    return f"{prefix}_{final_sparsity:g}" if spec.prunes else prefix


def paper_grid(data_paths: dict[str, str] | None = None, **overrides) -> dict[str, dict]:
    """Every cell of the paper's grid, `"<group>/<run>" -> ExperimentConfig fields`, in a stable order
    (`select` turns the chosen ones into validated configs).

    `data_paths` maps a dataset name to a local `.npz` (else TFDS); `overrides` replace config fields
    in every cell (e.g. `rounds=2` for a smoke test; the cell keeps its name), except the two that
    name it, `algorithm` and `final_sparsity`.
    """
    naming = sorted({"algorithm", "final_sparsity"} & set(overrides))
    if naming:
        raise ValueError(f"overrides cannot change {naming}: they name the cell; select other cells instead")
    data_paths = data_paths or {}
    unknown = set(data_paths) - set(ENVIRONMENTS)
    if unknown:
        raise ValueError(f"data_paths: unknown datasets {sorted(unknown)}; known: {sorted(ENVIRONMENTS)}")
    cells = {}
    for name, env in ENVIRONMENTS.items():
        for num_clients, participation in FEDERATIONS:
            for distribution in DISTRIBUTIONS:
                common = dict(
                    dataset=env.dataset, data_path=data_paths.get(name), num_clients=num_clients,
                    participation=participation, rounds=env.rounds, local_epochs=env.local_epochs,
                    batch_size=env.batch_size, client_learning_rate=env.client_learning_rate,
                    client_momentum=env.client_momentum, client_nesterov=env.client_nesterov,
                    partition="iid" if distribution == "iid" else "label_skew",
                    classes_per_client=None if distribution == "iid" else env.noniid_classes,
                )
                group = group_name(name, num_clients, distribution)
                runs = [(a, s) for a in PAPER_ALGORITHMS
                        for s in (SPARSITIES if algorithms.get(a).prunes else (None,))]
                for algorithm, sparsity in runs:
                    fields = {**common, "algorithm": algorithm, **overrides}
                    if sparsity is not None:
                        fields["final_sparsity"] = sparsity
                    cells[f"{group}/{run_name(algorithm, sparsity)}"] = fields
    cells.update(fedtiny_grid(data_paths, **overrides))
    return cells


# FedTiny (Huang et al., 2023): its paper-like setting, and the CPU-scaled comparison run here.
FEDTINY_DENSITIES = (0.01, 0.05)
FEDTINY_VARIANTS = {  # Run name prefix -> FedTiny's options (its ablations).
    "fedtiny": {},
    "fedtiny_noabns": {"adaptive_bn": False},
    "fedtiny_static": {"progressive": False},
}
FEDTINY_BASELINES = ("fedsparsify_global", "prunefl", "snip")
FEDTINY_CPU_SCALED = dict(
    dataset="fashion_mnist", model="bn_cnn", train_examples_per_class=1000, num_clients=10, rounds=30,
    local_epochs=4, batch_size=32, client_learning_rate=0.1, server_examples_per_class=5, adjust_every=3,
    adjust_until=30, readjust_every=3)
FEDTINY_GROUPS = {
    # The paper's setting: CIFAR-10, ResNet-18, Dirichlet(0.5), 10 clients, 100 rounds of 5 epochs,
    # batch 64, Delta_R = 10 until T_end = 100 (a GPU's work).
    "fedtiny_cifar10_resnet18": dict(
        dataset="cifar10", model="resnet18", partition="dirichlet", alpha=0.5, num_clients=10, rounds=100,
        local_epochs=5, batch_size=64, client_learning_rate=0.01, server_examples_per_class=5,
        adjust_every=10, adjust_until=100, readjust_every=10, densities=(0.01,)),
    # CPU-scaled: the small BatchNorm CNN (`models.bn_cnn`) on the first 1,000 FashionMNIST examples of
    # each class, 30 rounds of 4 epochs at SGD 0.1, Delta_R = 3 until T_end = 30 (the paper's 10 / 100
    # scaled to 30 rounds).
    "fedtiny_fashion_mnist_dirichlet": dict(
        FEDTINY_CPU_SCALED, partition="dirichlet", alpha=0.5, densities=FEDTINY_DENSITIES),
    "fedtiny_fashion_mnist_noniid2": dict(
        FEDTINY_CPU_SCALED, partition="label_skew", classes_per_client=2, densities=(0.01,)),
}


def fedtiny_grid(data_paths: dict[str, str] | None = None, **overrides) -> dict[str, dict]:
    """The FedTiny comparison cells, `"<group>/<run>" -> fields`: FedTiny, its ablations without
    adaptive BatchNorm selection and without progressive pruning, and FedSparsify-Global, PruneFL
    (readjusting every Delta_R rounds) and SNIP at s_f = 1 - d, all on one partition (every cell
    holds the same server examples out). Options an algorithm does not take are dropped by `select`."""
    cells = {}
    for group, setting in FEDTINY_GROUPS.items():
        setting = dict(setting)
        densities = setting.pop("densities")
        common = {**setting, "data_path": (data_paths or {}).get(setting["dataset"])}
        for density in densities:
            sparsity = round(1 - density, 6)
            for prefix, options in FEDTINY_VARIANTS.items():
                fields = {**common, "algorithm": "fedtiny", **options, **overrides, "final_sparsity": sparsity}
                cells[f"{group}/{prefix}_{sparsity:g}"] = fields
            for algorithm in FEDTINY_BASELINES:
                fields = {**common, "algorithm": algorithm, **overrides, "final_sparsity": sparsity}
                cells[f"{group}/{run_name(algorithm, sparsity)}"] = fields
    return cells


def select(cells: dict[str, dict], patterns: Iterable[str]) -> dict[str, ExperimentConfig]:
    """The configs of the cells matching any of the shell-style `patterns` (e.g.
    `fashion_mnist_noniid2/global_*`)."""
    patterns = list(patterns)
    for pattern in patterns:
        if not fnmatch.filter(cells, pattern):
            raise ValueError(f"pattern {pattern!r} matches no cell; cells look like "
                             f"'fashion_mnist_noniid2/global_0.9' (see `tff-sparsify grid list`)")
    chosen = {}
    for name, fields in cells.items():
        if any(fnmatch.fnmatch(name, p) for p in patterns):
            try:
                chosen[name] = ExperimentConfig.from_dict(fields, ignore_other_algorithms=True)
            except ValueError as error:
                raise ValueError(f"{error} (cell {name})") from None
    return chosen


def status(runs_dir: str, name: str, config: ExperimentConfig) -> dict:
    """Rounds done (and results when finished) of the cell `name` in `runs_dir`."""
    run_dir = os.path.join(runs_dir, name)
    summary = files.read_json(os.path.join(run_dir, layout.SUMMARY_FILE))
    history = files.read_json(os.path.join(run_dir, "history.json")) or []
    return {
        "cell": name,
        "rounds_done": len(history),
        "rounds": config.rounds,
        "completed": bool(summary and summary["completed"]),
        "accuracy": summary[MEAN_ACCURACY] if summary and summary["completed"] else None,
        "hours": sum(r["seconds"] for r in history) / 3600,
    }


def run_cells(cells: dict[str, ExperimentConfig], runs_dir: str, *, stop_after: int | None = None,
              progress: bool = True, on_cell: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """Runs (or resumes) `cells` one after another into `runs_dir`; returns each cell's summary."""
    from tff_sparsify import experiment

    summaries = {}
    for name, config in cells.items():
        summaries[name] = experiment.run(config, os.path.join(runs_dir, name), stop_after=stop_after,
                                         progress=progress)
        if on_cell:
            on_cell(name, summaries[name])
    return summaries


def summarize(runs_dir: str, cells: dict[str, ExperimentConfig], **table_kwargs) -> dict[str, list[dict]]:
    """For every group with finished cells among `cells`: the paper-layout table (`report.write_table`,
    FedAvg first when finished) and `reproduction.md` with the paper's numbers beside ours, in
    `<runs_dir>/<group>/table/`. Returns the table rows of each group."""
    from tff_sparsify import report

    finished: dict[str, list[str]] = {}
    for name, config in cells.items():
        if status(runs_dir, name, config)["completed"]:
            group, run = name.split("/")
            finished.setdefault(group, []).append(run)
    if not finished:
        raise ValueError(f"runs_dir {runs_dir!r} holds no finished cell among the {len(cells)} selected")
    tables = {}
    for group, runs in finished.items():
        runs.sort(key=lambda run: run != "fedavg")  # The reference for the x-factors.
        output_dir = os.path.join(runs_dir, group, "table")
        rows = report.write_table([os.path.join(runs_dir, group, r) for r in runs], output_dir, **table_kwargs)
        for row in rows:
            row["hours"] = status(runs_dir, f"{group}/{row['run']}", cells[f"{group}/{row['run']}"])["hours"]
        files.write_text(os.path.join(output_dir, "reproduction.md"), reproduction_markdown(group, rows) + "\n")
        tables[group] = rows
    return tables


def reproduction_markdown(group: str, rows: list[dict]) -> str:
    """Our results beside the paper's (where the paper reports the cell): accuracy, nonzero
    parameters, gzip size and communication, and how long each run took."""
    paper = PAPER_RESULTS.get(group, {})
    last = last_rounds_label(r["rounds"] for r in rows)
    lines = [
        f"### {group}",
        "",
        f"| run | accuracy, ours (last {last} / final) | accuracy, paper | params, ours / paper | "
        "gzip MB, ours / paper | comm. (M params), ours / paper | run time (h) |",
        "|" + " --- |" * 7,
    ]
    for r in rows:
        p = paper.get(r["run"])
        lines.append(
            f"| {r['run']} | {r['accuracy']:.4f} / {r['final_accuracy']:.4f} | {_paper(p, 0, '{:.4g}')} | "
            f"{r['params']:,} / {_paper(p, 1, '{:,}')} | {r['gzip_mb']:.3f} / {_paper(p, 2, '{:.3f}')} | "
            f"{r['comm_params'] / 1e6:.1f} / {_paper(p, 3, '{}')} | {r['hours']:.2f} |"
        )
    lines.append(f"\nAccuracy: mean test accuracy of the last {last} rounds / final "
                 "round (the paper reports one accuracy per run). '-': not reported in the paper.")
    return "\n".join(lines)


def _paper(values: tuple | None, index: int, fmt: str) -> str:
    return "-" if values is None else fmt.format(values[index])
