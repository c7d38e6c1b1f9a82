"""Figures of one run (accuracy, sparsity and communication per round) and of several runs."""
from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402

from tff_sparsify import files  # noqa: E402
from tff_sparsify.config import last_rounds_label  # noqa: E402


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
    """Three panels across runs: accuracy vs sparsity, accuracy vs cumulative Mbit per run, and
    accuracy vs training FLOPs relative to dense training, each point labelled with its peak
    on-device memory relative to dense (runs of versions that did not measure them are left out).

    `rows` are `report` rows (with `run`, `method`, `sparsity`, `accuracy`, `rounds`); `histories`
    maps each row's `run` to its history. A method has one colour in both panels and one entry in
    the figure's one legend. Sparsity is drawn on a -log10(1 - s) scale, so 0.8, 0.9, 0.95 and 0.99
    are apart; each communication curve is labelled with its run at its end.
    """
    methods = sorted({r["method"] for r in rows})
    colours = {method: f"C{i % 10}" for i, method in enumerate(methods)}
    fig, (sparsity_ax, comm_ax, flops_ax) = plt.subplots(1, 3, figsize=(20, 5), gridspec_kw={"wspace": 0.45})
    for method in methods:
        points = sorted((r["sparsity"], r["accuracy"]) for r in rows if r["method"] == method)
        if all(sparsity == 0 for sparsity, _ in points):  # Dense baselines: a reference line.
            sparsity_ax.axhline(points[0][1], linestyle="--", color=colours[method], label=f"{method} (dense)")
        else:
            sparsity_ax.plot(*zip(*points), "o-", color=colours[method], label=method)
    sparsities = sorted({round(r["sparsity"], 4) for r in rows if r["sparsity"] > 0})
    if sparsities:
        sparsity_ax.set_xscale("function", functions=(_nines, _from_nines))
        ticks = sparsity_ticks(sparsities)
        sparsity_ax.set_xticks(ticks, [f"{s:g}" for s in ticks])
        sparsity_ax.set_xlim(_from_nines(_nines(sparsities[0]) - 0.15), _from_nines(_nines(sparsities[-1]) + 0.15))
    last = last_rounds_label(r["rounds"] for r in rows)
    sparsity_ax.set(xlabel="sparsity of prunable weights", ylabel=f"test accuracy (mean of last {last} rounds)",
                    title="accuracy vs sparsity")
    ends = []
    for row in rows:
        history = histories[row["run"]]
        mbit, accuracy = [r["cumulative_mbit"] for r in history], [r["test_accuracy"] for r in history]
        comm_ax.plot(mbit, accuracy, color=colours[row["method"]], linewidth=1, alpha=0.8)
        comm_ax.plot(mbit[-1], accuracy[-1], "o", color=colours[row["method"]], markersize=4)
        ends.append((mbit[-1], accuracy[-1], row))
    _label_ends(comm_ax, ends, colours)
    comm_ax.set_xscale("log")
    comm_ax.set(xlabel="cumulative communication (Mbit, log scale)", ylabel="test accuracy", ylim=(0, 1),
                title="accuracy vs communication")
    points = {}  # Runs at the same point (an ablation that changed nothing) share one label.
    for row in rows:
        if row.get("flops_x") is not None:
            key = (round(row["flops_x"], 4), round(row["accuracy"], 4), round(row["memory_x"], 3))
            points.setdefault(key, []).append(row)
    if points:
        low, high = min(p[0] for p in points), max(p[0] for p in points)
        flops_ax.set_xlim(low / 1.5, high * 1.5)
        gap = 0.045 * max(0.2, max(p[1] for p in points) - min(p[1] for p in points))
        top = max(p[1] for p in points)
        for right_half in (False, True):  # Labels left of the log axis' middle point right, the others left.
            side = sorted((p for p in points if (p[0] > np.sqrt(low * high)) == right_half), key=lambda p: p[1])
            label_ys = spread([p[1] for p in side], gap)
            top = max([top, *label_ys])
            for (flops_x, accuracy, memory_x), label_y in zip(side, label_ys):
                same = points[(flops_x, accuracy, memory_x)]
                colour = colours[same[0]["method"]]
                label = f"{' = '.join(r['run'] for r in same)} (memory x{memory_x:.3f})"
                flops_ax.plot(flops_x, accuracy, "o", color=colour)
                flops_ax.annotate(label, (flops_x, accuracy),
                                  xytext=(flops_x / 1.08 if right_half else flops_x * 1.08, label_y + gap / 3),
                                  fontsize=7, color=colour, ha="right" if right_half else "left",
                                  arrowprops=dict(arrowstyle="-", color=colour, lw=0.5, alpha=0.6))
        flops_ax.set_ylim(top=top + 2 * gap)  # Room for the highest label inside the axes.
    flops_ax.set_xscale("log")
    for ax in (comm_ax, flops_ax):
        _plain_log_ticks(ax)
    flops_ax.set(xlabel="training FLOPs relative to dense training (log scale)",
                 ylabel=f"test accuracy (mean of last {last} rounds)", title="accuracy vs training compute")
    for ax in (sparsity_ax, comm_ax, flops_ax):
        ax.grid(alpha=0.3)
    handles, labels = sparsity_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    fig.subplots_adjust(left=0.05, right=0.95, bottom=0.2, top=0.92)  # Room for the labels and legend.
    _save(fig, path, tight=False)


def _label_ends(ax, ends: list, colours: dict, gap: float = 0.035) -> None:
    """Each run's name right of the plot, at its curve's final accuracy, moved apart just enough not
    to overlap, with a thin line to its curve's end."""
    ends = sorted(ends, key=lambda end: end[1])
    for (mbit, accuracy, row), label_y in zip(ends, spread([end[1] for end in ends], gap)):
        ax.annotate(row["run"], (mbit, accuracy), xytext=(1.02, label_y), textcoords=("axes fraction", "data"),
                    fontsize=8, color=colours[row["method"]], va="center",
                    arrowprops=dict(arrowstyle="-", color=colours[row["method"]], lw=0.5, alpha=0.6))


def spread(values: list[float], gap: float) -> list[float]:
    """Label positions for ascending `values`: each at its value, moved up just enough to stay `gap`
    above the previous one."""
    positions = []
    for value in values:
        positions.append(value if not positions else max(value, positions[-1] + gap))
    return positions


def sparsity_ticks(sparsities: list[float], min_gap: float = 0.1) -> list[float]:
    """One tick per cluster of ascending `sparsities` whose neighbours lie within `min_gap` of each
    other on the -log10(1 - s) axis: the cluster's value with the shortest label (0.95 among 0.9479
    and 0.95), so that close runs' ticks do not overlap."""
    clusters = []
    for s in sparsities:
        if clusters and _nines(s) - _nines(clusters[-1][-1]) < min_gap:
            clusters[-1].append(s)
        else:
            clusters.append([s])
    return [min(cluster, key=lambda s: len(f"{s:g}")) for cluster in clusters]


def _plain_log_ticks(ax) -> None:
    """A log x axis labelled at 1, 2 and 5 times each power of ten, as plain numbers (0.02, 0.1, 200):
    matplotlib's default labels every minor tick of a short range, and they overlap."""
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _nines(sparsity):
    """-log10(1 - s): 1 at 0.9, 2 at 0.99."""
    return -np.log10(1 - np.clip(sparsity, 0, 1 - 1e-9))


def _from_nines(nines):
    return 1 - 10.0 ** -np.asarray(nines)


def _save(fig, path: str, tight: bool = True) -> None:
    if tight:
        fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"), suffix=".png")
    plt.close(fig)
