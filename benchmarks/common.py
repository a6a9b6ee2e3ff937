"""What every benchmark writes next to its numbers: the machine, the versions, the command.

Run the benchmarks from the repository root as modules, e.g.
``python -m benchmarks.overhead --out results/bench_overhead.json``.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys
import time

__all__ = ["MIB", "timed", "rss_bytes", "machine_info", "write_result"]

MIB = 2**20

ROOT = pathlib.Path(__file__).resolve().parents[1]


def timed(fn, *args) -> tuple[float, float]:
    """Run ``fn(*args)`` once; (wall-clock seconds, process CPU seconds). ``fn`` must return when done."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set size in bytes, from Linux ``/proc/self/status``: ``VmRSS`` (now) or
    ``VmHWM`` (its peak). Not ``getrusage``'s ``ru_maxrss``: Linux carries it over fork and exec, so a child of
    a larger process reports the parent's peak."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Set this process's ``VmHWM`` (peak RSS) to its current RSS (Linux: ``5`` written to
    ``/proc/self/clear_refs``), so a later ``rss_bytes("VmHWM")`` is the peak of what ran since."""
    pathlib.Path("/proc/self/clear_refs").write_text("5")


def machine_info() -> dict:
    """CPU count, load average, Python/TensorFlow/Keras versions, the commit (and whether
    ``tf_selopt/`` differs from it)."""
    import keras
    import tensorflow as tf

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_1min": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "commit": _git("rev-parse", "HEAD"),
        "tf_selopt_uncommitted_changes": bool(_git("status", "--porcelain", "--", "tf_selopt")),
    }


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def write_result(out: pathlib.Path, result: dict) -> None:
    """Write ``result`` as JSON with the command line and machine info added."""
    result = {"command": " ".join(["python", "-m", _module_name()] + sys.argv[1:]), "machine": machine_info(), **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


def _module_name() -> str:
    main = pathlib.Path(sys.argv[0]).resolve()
    return f"{main.parent.name}.{main.stem}" if main.parent.name in ("benchmarks", "serving") else str(sys.argv[0])
