"""Figures 1 and 2 of the study from its rows (``runner.read_rows``), with matplotlib.

Figure 1 (``figure1.png``): test accuracy (top) and test loss (bottom) against the
fraction of parameters whose optimization was switched off, one line per
criterion, mean over seeds with a +-1 std band; full training as the reference
line. Figure 2 (``figure2.png``): test accuracy against the fraction of zeroed
kernel weights, one line per pruning method. One column per (data, model).
The x axis is ``-log10(1 - fraction)``, labelled in %, so 99 and 99.5% are apart.
"""

from __future__ import annotations

import pathlib
import statistics

import numpy as np

__all__ = ["plot", "grouped"]


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
