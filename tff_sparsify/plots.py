"""Figures of one run (accuracy, sparsity and communication per round) and of several runs."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tff_sparsify import files  # noqa: E402


def plot_history(history: list[dict], path: str, title: str = "") -> None:
    """Three panels: test accuracy and sparsity per round, and test accuracy vs cumulative Mbit."""
    if not history:
        return
    rounds = [row["round"] for row in history]
    accuracy = [row["test_accuracy"] for row in history]
    fig, (acc_ax, sparsity_ax, comm_ax) = plt.subplots(1, 3, figsize=(14, 4))
    acc_ax.plot(rounds, accuracy)
    acc_ax.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1), title="accuracy")
    sparsity_ax.plot(rounds, [row["sparsity"] for row in history], color="tab:red", label="realized")
    targets = [(row["round"], row["target_sparsity"]) for row in history if row["target_sparsity"] is not None]
    if targets:
        sparsity_ax.plot(*zip(*targets), "k:", label="target s(t)")
    sparsity_ax.set(xlabel="round", ylabel="sparsity of prunable weights", ylim=(0, 1), title="sparsity")
    sparsity_ax.legend()
    comm_ax.plot([row["cumulative_mbit"] for row in history], accuracy, color="tab:green")
    comm_ax.set(xlabel="cumulative communication (Mbit)", ylabel="test accuracy", ylim=(0, 1),
                title="accuracy vs communication")
    for ax in (acc_ax, sparsity_ax, comm_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)


def plot_comparison(rows: list[dict], histories: dict[str, list[dict]], path: str) -> None:
    """Two panels across runs: accuracy vs sparsity, and accuracy vs cumulative Mbit per run.

    `rows` are `report` rows (with `run`, `method`, `sparsity`, `accuracy`); `histories` maps each
    row's `run` to its history. A method has one colour in both panels.
    """
    methods = sorted({r["method"] for r in rows})
    colours = {method: f"C{i % 10}" for i, method in enumerate(methods)}
    fig, (sparsity_ax, comm_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for method in methods:
        points = sorted((r["sparsity"], r["accuracy"]) for r in rows if r["method"] == method)
        if all(sparsity == 0 for sparsity, _ in points):  # Dense baselines: a reference line.
            sparsity_ax.axhline(points[0][1], linestyle="--", color=colours[method], label=f"{method} (dense)")
        else:
            sparsity_ax.plot(*zip(*points), "o-", color=colours[method], label=method)
    sparsity_ax.set(xlabel="sparsity", ylabel="test accuracy (mean of last 10 rounds)",
                    title="accuracy vs sparsity")
    for row in rows:
        history = histories[row["run"]]
        comm_ax.plot([r["cumulative_mbit"] for r in history], [r["test_accuracy"] for r in history],
                     color=colours[row["method"]], label=row["run"])
    comm_ax.set(xlabel="cumulative communication (Mbit)", ylabel="test accuracy", ylim=(0, 1),
                title="accuracy vs communication")
    for ax in (sparsity_ax, comm_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def _save(fig, path: str) -> None:
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"), suffix=".png")
    plt.close(fig)
