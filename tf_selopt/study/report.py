"""A Markdown report of a finished (or partial) study directory: tables, figures, versions, config."""

from __future__ import annotations

import json
import pathlib

from tf_selopt.study.plots import grouped

__all__ = ["tables", "write_report"]


def _cell(points, level):
    for lv, mean, std, n in points:
        if lv == level:
            return f"{100 * mean:.2f} ± {100 * std:.2f}"
    return "-"


def tables(rows) -> str:
    """Markdown tables: test accuracy % (mean ± std over seeds) per method and level, per (data, model)."""
    out = []
    for kind, what in (("selection", "frozen fraction"), ("pruning", "zeroed kernel weights")):
        panels = grouped(rows, kind)
        for (data, model), lines in sorted(panels.items()):
            levels = sorted({lv for points in lines.values() for lv, *_ in points})
            full = grouped(rows, "full").get((data, model), {}).get("adam")
            seeds = max(n for points in lines.values() for *_, n in points)
            out.append(
                f"\n**{kind}: {data} / {model}**: test accuracy % by {what} (mean ± std over {seeds} "
                f"seeds); full training: {_cell(full, 0.0) if full else '-'}\n"
            )
            out.append("| method | " + " | ".join(f"{100 * lv:g}%" for lv in levels) + " |")
            out.append("|---|" + "---|" * len(levels))
            for method, points in sorted(lines.items()):
                out.append(f"| {method} | " + " | ".join(_cell(points, lv) for lv in levels) + " |")
    return "\n".join(out)


def write_report(rows, out_dir) -> pathlib.Path:
    """Write ``report.md`` into ``out_dir`` (reads ``study.json`` for config and versions); return its path."""
    out_dir = pathlib.Path(out_dir)
    meta = json.loads((out_dir / "study.json").read_text())
    figures = [p.name for p in (out_dir / "figure1.png", out_dir / "figure2.png") if p.exists()]
    exports = [r["export"] for r in rows if r.get("export")]
    seconds = sum(r["seconds"] for r in rows)
    parts = [
        f"# Study `{meta['config']['name']}`\n",
        f"{len(rows)} runs ({seconds / 60:.1f} min of training), config hash `{meta['config_hash']}`.",
        tables(rows),
        "",
        *[f"![{name}]({name})" for name in figures],
    ]
    if exports:
        parts.append("\n## Exported model\n")
        for e in exports:
            parts.append(
                f"- SavedModel `{e['saved_model']}`; TFLite (sparse) `{e['tflite']}`: {e['tflite_bytes']:,} B "
                f"(gzip {e['tflite_gzip_bytes']:,} B), max |TFLite - Keras| = {e['max_abs_diff']:.2e}"
            )
    parts += [
        "\n## Versions\n",
        "```json",
        json.dumps(meta["versions"], indent=1),
        "```",
        "\n## Config\n",
        "```json",
        json.dumps(meta["config"], indent=1),
        "```\n",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts))
    return path
