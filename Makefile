# The two commands of the README:
#   make demo   set up .venv (pinned), install the project, run the main job (selopt demo: the short study)
#   make test   set up .venv if needed, run the test suite (what .ci/run calls)
# Also: make ruff (ruff check), make lint (ruff check + ruff format --check; CI runs it),
# make docs / docs-check (regenerate docs/bad_inputs.md / fail if stale), make docs-site (the mkdocs site
# with the API reference, into site/; warnings are errors), make smoke (install + quickstart on Python 3.13),
# make bazel-test (Bazel 4 from Debian: apt-get install bazel-bootstrap bazel-rules-java; see BUILD).
PYTHON ?= python3.11
SMOKE_PYTHON ?=
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup demo test test-fast ruff lint docs docs-check docs-site smoke bazel-test quality bench deployment clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[all,test,docs]'
	touch $@

demo: $(STAMP)
	$(BIN)/selopt demo --out runs/demo

# --dist loadgroup selects tests/conftest.py's scheduler: each module of its ONE_WORKER_MODULES runs on one
# worker, so its module-scoped fixtures (subprocess runs, a trained model, a study) are built once; the other
# tests are spread one at a time as with --dist load, those marked slow first.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=15 --doctest-modules tf_selopt tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow" tests

ruff: $(STAMP)
	$(BIN)/ruff check .

lint: ruff
	$(BIN)/ruff format --check .

docs: $(STAMP)
	$(BIN)/python scripts/gen_bad_inputs.py

docs-check: $(STAMP)
	$(BIN)/python scripts/gen_bad_inputs.py --check

docs-site: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

smoke:
	scripts/smoke_install.sh $(SMOKE_PYTHON)

bazel-test: $(STAMP)
	bazel test //:test_layering --test_output=errors

bench: $(STAMP)
	$(BIN)/python -m benchmarks.overhead --out results/bench_overhead.json
	$(BIN)/python -m benchmarks.selection_cost --out results/bench_selection.json
	$(BIN)/python -m benchmarks.selection_graph --out results/bench_selection_graph.json
	$(BIN)/python -m benchmarks.memory --out results/bench_memory.json
	$(BIN)/python -m benchmarks.savings --out results/bench_savings.json

deployment: $(STAMP)
	$(BIN)/python -m serving.deployment

quality: $(STAMP)
	$(BIN)/python -m benchmarks.quality --out results/quality.json

clean:
	rm -rf $(VENV) build site *.egg-info
