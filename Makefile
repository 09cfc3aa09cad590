# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Offline here, data and models come from ../shared (override BENCH_DATA_DIR / BENCH_MODEL_DIR);
# online, leave them empty and the Hub ids are used.
VENV ?= .venv
PY := $(VENV)/bin/python
BENCH_DATA_DIR ?= $(abspath $(wildcard ../shared/data))
BENCH_MODEL_DIR ?= $(abspath $(wildcard ../shared/models))
export BENCH_DATA_DIR BENCH_MODEL_DIR
SUITE ?= nlp
BUDGET ?= quick
# The test tools, and Ray for the `--executor ray` tests.
EXTRAS ?= dev,ray

.PHONY: install run test bench gpu-kit

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m bench run --suite $(SUITE) --budget $(BUDGET)

# The layer contract first (pyproject.toml, [tool.importlinter]): a wrong-way import fails the tests.
test: install
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest

# The harness's own overhead (benchmarks/, not part of `make test`): training loop vs a bare loop, run start-up,
# harness vs HF Trainer on SST-2 (BENCH_TRAINER_EXAMPLES=160 for a quick check), harness vs TRL SFTTrainer on
# sst2-gen with SmolLM2 (BENCH_SFT_STEPS=8 for a quick check). JSON in $(BENCH_JSON).
BENCH_JSON ?= .benchmarks/latest.json
bench: install
	mkdir -p $(dir $(BENCH_JSON))
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest benchmarks -o addopts=-ra --benchmark-only -s \
		--benchmark-json=$(BENCH_JSON) $(BENCH_ARGS)

# The kit for the GPU check on a lent GPU machine (benchmarks/gpu/check.sh says how it is used): wheels the
# machine lacks, MiniLM in two halves, SST-2 and CoNLL-2003, in .gpu/a and .gpu/b (git-ignored).
gpu-kit: install
	PY=$(PY) bash benchmarks/gpu/make_kit.sh
