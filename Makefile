# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo probe test test-fast lint format bench clean

install: $(STAMP) fashion-mnist

# Re-runs only when the dependency description changes, so a second `make install` takes seconds.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Real labelled images for the probes; optional, installed when apt-get is usable.
.PHONY: fashion-mnist
fashion-mnist:
	@if [ -d $(FMNIST) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST probes will be skipped"; \
	else echo "note: apt-get unavailable; Fashion-MNIST probes will be skipped"; fi

# bf16 where it is native (AVX512-BF16/AMX CPUs, Ampere+ GPUs), fp32 elsewhere, where emulated bf16
# would be slower (the quickstart's numbers in the README are bf16's).
demo: install
	$(BIN)/stablerep fit --config configs/quickstart.yaml --trainer.precision \
		$$($(BIN)/python -c "from stablerep_pl.distributed.devices import fast_precision; print(fast_precision())")

# Offline evaluation of the newest quickstart checkpoint (run `make demo` first).
probe: install
	@ckpt=$$(ls -t runs/quickstart/version_*/checkpoints/last.ckpt 2>/dev/null | head -1); \
	if [ -z "$$ckpt" ]; then echo "no quickstart checkpoint under runs/quickstart; run make demo first"; exit 1; fi; \
	$(BIN)/stablerep probe --config configs/probe/quickstart.yaml --ckpt $$ckpt --out runs/probe/quickstart_procedural && \
	if [ -d $(FMNIST) ]; then $(BIN)/stablerep probe --config configs/probe/fashion_mnist.yaml --ckpt $$ckpt --out runs/probe/quickstart_fmnist; fi

# StableRep's findings in miniature: 4 studies x 3 seeds, equal compute, table + figures under
# runs/replicate/paper_findings (about 2 hours on 2 CPU cores; a rerun skips finished cells).
.PHONY: replicate
replicate: install
	$(BIN)/stablerep replicate --config configs/replicate/paper_findings.yaml

# Two pytest workers (pytest-xdist; idle workers steal queued tests) on the 2-core machines, one
# thread each (tests/conftest.py); the 15 slowest tests are printed at the end.
test: install
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: install
	$(BIN)/python benchmarks/loss.py

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache .ruff_cache
