# Two commands on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv repro test perf report reproduce mutation clean-venv

venv: $(STAMP)

# Re-install when a pin changes. torch==2.13.0 resolves to the CPU wheel on disk.
$(STAMP): requirements.txt requirements-lock.txt plugins/vqbench_vqp/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -c requirements-lock.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e plugins/vqbench_vqp
	touch $(STAMP)

repro: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

test: venv
	$(PY) -m pytest -q

perf: venv
	$(PY) -m benchmark perf

# Mutants of every method's loss/update against its tests (minutes): last result in reports/mutation.md.
mutation: venv
	$(PY) -m tools.mutation

report: venv
	$(PY) -m benchmark report

# The Wasserstein-VQ authors' atomic experiment at their scale (not part of dvc repro; a GPU machine).
reproduce: venv
	$(PY) -m benchmark sweep --params params-reproduce.yaml --sweep reproduce
	$(PY) -m benchmark sweep --params params-reproduce.yaml --sweep reproduce_seeds
	$(PY) -m benchmark sweep --params params-reproduce.yaml --sweep reproduce_seeds_uniform
	$(PY) -m benchmark sweep --params params-reproduce.yaml --sweep reproduce_other_weights
	$(PY) -m benchmark report --reproduce --params params-reproduce.yaml

clean-venv:
	rm -rf $(VENV)
