# `make run`  : set up (first time) and run the main job, the study's Table 1 sweep, on this machine
# `make test` : set up (first time) and run the test suite (what CI runs)
# `make images`: build the trainer and TensorBoard images (docker or podman; README, "Images")
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch (a wheel of it lies on this machine's disk). On a GPU machine install
# your CUDA torch first, or run e.g. `make run TORCH=torch==2.13.0+cu126`.
TORCH  ?= torch==2.13.0
SWEEP  ?= workers=2,4,6 epochs=10,30 -m

.PHONY: setup bytecode run test test-full test-images images lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	$(MAKE) --no-print-directory bytecode
	touch $@

# The project's modules compiled once, as pip compiles what it installs: where Python writes no
# bytecode itself (PYTHONDONTWRITEBYTECODE=1, as on the developers' machines and in many
# containers) every sweep, report and worker would compile them again at each start (~0.06 s of
# a sweep's start-up; benchmarks/README.md section 6). A module edited since is compiled in
# memory as before; `make bytecode` refreshes them all.
bytecode:
	$(BIN)/python -m compileall -q bench trainer rundir hydra_plugins benchmarks

setup: $(VENV)/.installed

run: setup
	$(BIN)/python -m bench.sweep $(SWEEP)

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-full: setup
	$(BIN)/python -m pytest -q

images:
	bash docker/build-images.sh

test-images: setup
	$(BIN)/python -m pytest -q -m images

lint: setup
	$(BIN)/ruff check bench trainer rundir tests hydra_plugins benchmarks

format: setup
	$(BIN)/ruff format bench trainer rundir tests hydra_plugins benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
