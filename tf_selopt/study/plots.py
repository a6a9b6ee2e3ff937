"""Figures 1 and 2 of the study from its rows (``runner.read_rows``), with matplotlib.

Figure 1 (``figure1.png``): test accuracy (top) and test loss (bottom) against the
fraction of parameters whose optimization was switched off, one line per
criterion, mean over seeds with a +-1 std band; full training as the reference
line. Figure 2 (``figure2.png``): test accuracy against the fraction of zeroed
kernel weights, one line per pruning method. One column per (data, model).
The x axis is ``-log10(1 - fraction)``, labelled in %, so 99 and 99.5% are apart.

``structured_figure`` draws the structured pruning methods from the deployment
benchmark's ``summary.json`` (``serving/structured_deployment.py``): accuracy
against the pruned fraction of the prunable weights per method (top), and
accuracy against the measured batch-1 p50 latency of the file each method
deploys (bottom, log scale), one column per model.
"""

from __future__ import annotations

import pathlib
import statistics

import numpy as np

__all__ = ["plot", "grouped", "structured_figure", "STRUCTURED_METHODS"]

# (label, artifact key in summary.json, marker): the file each method deploys, dense int8 for reference
STRUCTURED_METHODS = (
    ("dense (float32)", "dense.float32", "o"),
    ("unstructured", "unstructured90.sparse_float32", "s"),
    ("1x4 blocks", "block1x4-90.sparse_float32", "^"),
    ("2:4", "nm2of4.sparse_float32", "D"),
    ("1x16 blocks, int8", "block1x16-90.sparse_int8", "v"),
    ("dense (int8)", "dense.int8", "P"),
)


def grouped(rows, kind, key="test_accuracy") -> dict:
    """{(data, model): {method: [(level, mean, std, n), ...] sorted by level}} over seeds."""
    cells = {}
    for r in rows:
        if r["kind"] == kind:
            cells.setdefault((r["data"], r["model"]), {}).setdefault(r["method"], {}).setdefault(r["level"], []).append(
                r[key]
            )
    out = {}
    for panel, methods in cells.items():
        out[panel] = {
            m: [
                (lv, statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                for lv, v in sorted(levels.items())
            ]
            for m, levels in methods.items()
        }
    return out


def _forward(x):
    return -np.log10(np.clip(1.0 - np.asarray(x, dtype=float), 1e-6, None))


def _inverse(y):
    return 1.0 - 10.0 ** (-np.asarray(y, dtype=float))


def _axis(ax, levels, xlabel):
    ax.set_xscale("function", functions=(_forward, _inverse))
    ticks = sorted(set(levels) | {0.0})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{100 * t:g}" for t in ticks], rotation=45, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def _figure(rows, kind, keys, xlabel, title, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted(grouped(rows, kind))
    if not panels:
        return None
    fig, axes = plt.subplots(len(keys), len(panels), figsize=(4.2 * len(panels), 3.4 * len(keys)), squeeze=False)
    for col, panel in enumerate(panels):
        for row_i, (key, label) in enumerate(keys):
            ax = axes[row_i][col]
            lines = grouped(rows, kind, key)[panel]
            levels = [lv for points in lines.values() for lv, *_ in points]
            reference = grouped(rows, "full", key).get(panel, {}).get("adam")
            if reference:
                _, mean, std, n = reference[0]
                ax.axhline(mean, color="black", lw=1, ls="--", label=f"full training (n={n})")
                ax.axhspan(mean - std, mean + std, color="black", alpha=0.08)
            for method, points in sorted(lines.items()):
                x = [p[0] for p in points]
                m = np.array([p[1] for p in points])
                s = np.array([p[2] for p in points])
                (line,) = ax.plot(x, m, marker="o", ms=3, label=method)
                ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.15)
            _axis(ax, levels, xlabel)
            ax.set_ylabel(label)
            if row_i == 0:
                ax.set_title(f"{panel[0]} / {panel[1]}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot(rows, out_dir) -> list[pathlib.Path]:
    """Write ``figure1.png`` (selection) and ``figure2.png`` (pruning) for the kinds present; return the paths."""
    out_dir = pathlib.Path(out_dir)
    made = [
        _figure(
            rows,
            "selection",
            [("test_accuracy", "test accuracy"), ("test_loss", "test loss")],
            "parameters not optimized (%)",
            "Figure 1: quality vs frozen fraction\n(mean ± std over seeds)",
            out_dir / "figure1.png",
        ),
        _figure(
            rows,
            "pruning",
            [("test_accuracy", "test accuracy")],
            "zeroed kernel weights (%)",
            "Figure 2: quality vs zeroed fraction\n(mean ± std over seeds)",
            out_dir / "figure2.png",
        ),
    ]
    return [p for p in made if p is not None]


def structured_figure(summary, path, threads=1, xnnpack=True):
    """Accuracy vs pruned fraction (top) and vs p50 latency (bottom) per structured method; returns ``path``.

    ``summary``: the dict of ``summary.json``; top: the Keras model's test
    accuracy against ``prunable_zeros / prunable``; bottom: the TFLite file's
    test accuracy against its p50 (``threads``, XNNPack on or off), for the
    file each method deploys (``STRUCTURED_METHODS``) plus the dense int8
    file when present. One column per model; None when there is nothing to draw.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    models = summary.get("models", {})
    if not models:
        return None
    fig, axes = plt.subplots(2, len(models), figsize=(4.6 * len(models), 7.0), squeeze=False)
    for col, (name, result) in enumerate(models.items()):
        top, bottom = axes[0][col], axes[1][col]
        for i, (label, key, marker) in enumerate(STRUCTURED_METHODS):
            entry = result.get("artifacts", {}).get(key)
            if entry is None:
                continue
            style = dict(marker=marker, color=f"C{i}")
            text = dict(fontsize=7, xytext=(4, 3), textcoords="offset points")
            variant, artifact = key.split(".")
            if artifact != "int8":  # the Keras model is the same for dense float32 and dense int8: drawn once
                xy = (100 * entry["prunable_zeros"] / entry["prunable"], 100 * result["keras_accuracy"][variant])
                top.scatter(*xy, **style)
                top.annotate(label.split(",")[0], xy, **text)
            timing = [e for e in entry["latency"] if (e.get("threads"), e.get("xnnpack")) == (threads, xnnpack)]
            if timing and "p50_us" in timing[0]:
                xy = (timing[0]["p50_us"], 100 * entry["accuracy"])
                bottom.scatter(*xy, **style)
                bottom.annotate(label, xy, **text)
        top.set_title(name, fontsize=9)
        top.set_xlabel("pruned prunable weights (%)")
        top.set_ylabel("test accuracy (%), Keras model")
        top.set_xlim(-5, 100)
        bottom.set_xscale("log")
        bottom.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        bottom.xaxis.set_major_formatter(ScalarFormatter())
        bottom.xaxis.set_minor_formatter(NullFormatter())
        bottom.tick_params(axis="x", which="both", labelsize=7)
        bottom.set_xlabel(f"p50 latency (us), batch 1, {threads} thread(s), XNNPack {'on' if xnnpack else 'off'}")
        bottom.set_ylabel("test accuracy (%), TFLite file")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.margins(x=0.2, y=0.15)
    fig.suptitle("Structured pruning: accuracy vs pruned fraction (top) and vs measured latency (bottom)", fontsize=10)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
