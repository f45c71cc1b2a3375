# Two commands do everything on a fresh machine:
#   make demo   set up, then run the main job (a small fairness sweep on MovieLens-100K, with plots)
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup base demo test bench clean

# `make demo` needs only rf2 itself (base install); `make setup`/`make test` (and CI) add the test
# extra (pytest, the notebook kernel, hypothesis, Ray).
base: $(VENV)/.installed
setup: $(VENV)/.installed-test

# torch is pinned (==2.13.0, the CPU wheel); recbole ships the offline MovieLens-100K copy and is
# installed without its (heavy, unused) dependencies.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps recbole==1.2.1
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: base
	$(BIN)/rf2 sweep --config benchmarks/demo.toml --out results/demo --plot

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) results .pytest_cache
