"""The README's main job and the custom-loop example run end to end on the bundled data."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name, *args):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True, text=True, timeout=600, check=True, cwd=ROOT,
    ).stdout
    return out


@pytest.mark.slow
def test_quickstart_freezes_ninety_percent_and_learns():
    out = run_example("quickstart.py", "--epochs", "2")
    accuracy = float(re.search(r"test accuracy:\s+([\d.]+)", out).group(1))
    selected, total = map(int, re.search(r"selected count:\s+(\d+) of (\d+)", out).groups())
    assert selected == round(0.1 * total)
    assert re.search(r"frozen fraction: 0\.9000", out)
    assert accuracy > 0.8  # one warm-up epoch alone reaches ~0.83 on this split


@pytest.mark.slow
def test_custom_loop_reselects():
    out = run_example("custom_loop.py", "--steps", "300")
    assert "selections 2, frozen 0.800" in out
    assert float(re.search(r"test accuracy: ([\d.]+)", out).group(1)) > 0.8
