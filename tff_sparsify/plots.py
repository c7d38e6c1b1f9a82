"""Figures of a run: test accuracy and sparsity per round."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history: list[dict], path: str, title: str = "") -> None:
    """Writes a PNG with test accuracy (left axis) and sparsity of the prunable weights (right axis)."""
    if not history:
        return
    rounds = [row["round"] for row in history]
    fig, accuracy_axis = plt.subplots(figsize=(7, 4))
    accuracy_axis.plot(rounds, [row["test_accuracy"] for row in history], color="tab:blue", label="test accuracy")
    accuracy_axis.set_xlabel("round")
    accuracy_axis.set_ylabel("test accuracy", color="tab:blue")
    accuracy_axis.set_ylim(0, 1)
    sparsity_axis = accuracy_axis.twinx()
    sparsity_axis.plot(rounds, [row["sparsity"] for row in history], color="tab:red", label="sparsity")
    sparsity_axis.set_ylabel("sparsity (prunable weights)", color="tab:red")
    sparsity_axis.set_ylim(0, 1)
    accuracy_axis.set_title(title)
    accuracy_axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
