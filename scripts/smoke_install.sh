#!/usr/bin/env bash
# Install + quickstart smoke test on another Python (CI: 3.13): a fresh venv, the base install with the
# lock as constraints and a base-only script, then the extras and examples/quickstart.py (1 epoch).
#   scripts/smoke_install.sh [PYTHON]      (default: pyenv's 3.13 if there is one, else python3.13)
set -euo pipefail
PY=${1:-$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 2>/dev/null | tail -n 1)}
PY=${PY:-python3.13}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
"$PY" -m venv "$TMP/venv"
PIP=("$TMP/venv/bin/pip" install --quiet --disable-pip-version-check -c "$ROOT/requirements.lock")
# build from a copy: a non-editable install leaves build/ and *.egg-info behind
mkdir "$TMP/src"
tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./runs --exclude=./site --exclude='*.egg-info' -cf - . \
    | tar -C "$TMP/src" -xf -
"${PIP[@]}" "$TMP/src"
cd "$TMP"   # not the checkout: import the installed package
"$TMP/venv/bin/selopt" --help > /dev/null
"$TMP/venv/bin/python" "$ROOT/scripts/smoke_base.py"
"${PIP[@]}" "$TMP/src[all]"
"$TMP/venv/bin/python" "$ROOT/examples/quickstart.py" --epochs 2
echo "smoke test on $("$TMP/venv/bin/python" --version): passed"
