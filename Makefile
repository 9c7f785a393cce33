# sora_tf: `make train MODEL=sora_cls` and `make test` work on a fresh clone with only Python 3.10-3.12.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?= sora_cls
DATA ?=
EPOCHS ?=
OUT ?=
RUN ?=
SET ?=
PYTEST_ARGS ?=
# pytest processes (pytest-xdist): 2 fits the CI's 2 cores; TEST_JOBS=0 runs the suite in this process.
TEST_JOBS ?= 2
# GPU=1: `tensorflow[and-cuda]` in place of `tensorflow-cpu`, in a .venv of its own: switching
# flavour makes a fresh .venv, so the two builds are never installed over each other.
GPU ?=
FLAVOUR := $(if $(GPU),gpu,cpu)

train_args = --model $(MODEL) $(if $(DATA),--data $(DATA)) $(if $(EPOCHS),--epochs $(EPOCHS)) \
	$(if $(OUT),--out $(OUT)) $(foreach s,$(SET),--set $(s))
newest_run = $(or $(RUN),$(shell ls -dt runs/$(MODEL)-* 2>/dev/null | head -n 1))

.PHONY: setup train eval export bench data test test-fast gpu-check clean

$(VENV)/.installed-$(FLAVOUR): setup.cfg pyproject.toml
	@if ls $(VENV)/.installed* 2>/dev/null | grep -qv '/.installed-$(FLAVOUR)$$'; then \
		echo "$(VENV) holds another TensorFlow build: making a fresh one for $(FLAVOUR)"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
ifeq ($(FLAVOUR),gpu)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m sora_tf.requirements > $(VENV)/requirements-gpu.txt
	$(PY) -m pip install --quiet "tensorflow[and-cuda]==2.21.*" -r $(VENV)/requirements-gpu.txt
else
	$(PY) -m pip install --quiet -e ".[test,beam]"
endif
	touch $@

setup: $(VENV)/.installed-$(FLAVOUR)

train: setup
	$(PY) -m sora_tf train $(train_args)

eval: setup
	@test -n "$(newest_run)" || { echo "no run of $(MODEL) under runs/; pass RUN=runs/..."; exit 2; }
	$(PY) -m sora_tf evaluate $(newest_run) $(if $(DATA),--data $(DATA))

export: setup
	@test -n "$(newest_run)" || { echo "no run of $(MODEL) under runs/; pass RUN=runs/..."; exit 2; }
	$(PY) -m sora_tf export $(newest_run)

# Writes BENCHMARKS.md and benchmarks.json; the TFLite rows need `make train` and `make export` first.
bench: setup
	$(PY) -m sora_tf.bench $(if $(DATA),--data $(DATA))

data: setup
	$(PY) -m sora_tf make-data --variant default

test: setup
	$(PY) -m pytest -q -n $(TEST_JOBS) $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_JOBS) -m "not slow" $(PYTEST_ARGS)

# Devices, where the model, augmentation and decoding run, and a training step and an input pass
# timed on the GPU against the CPU (`make setup GPU=1` first; on a machine without one it says so).
gpu-check: setup
	$(PY) -m sora_tf.gpu_check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
