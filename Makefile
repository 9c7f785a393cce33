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

train_args = --model $(MODEL) $(if $(DATA),--data $(DATA)) $(if $(EPOCHS),--epochs $(EPOCHS)) \
	$(if $(OUT),--out $(OUT)) $(foreach s,$(SET),--set $(s))
newest_run = $(or $(RUN),$(shell ls -dt runs/$(MODEL)-* 2>/dev/null | head -n 1))

.PHONY: setup train eval export bench data test test-fast clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

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
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
