# Two commands on a fresh machine:
#   make train convert   set up, make the demo data, train on it, convert to TFLite
#   make test            set up and run the tests
# Real runs: make train DATA=path/to/images EPOCHS=20 IMG_SIZE=224 WEIGHTS=imagenet

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed

DATA     ?=
DEMO_DIR ?= data/demo
EPOCHS   ?= 10
IMG_SIZE ?= 64
WEIGHTS  ?= auto
RUN      ?= runs/latest
NAME     ?=
# The accuracy gate of `crack convert`, in percentage points: 1.0 (the converter's default), and
# 10 for a run trained on the generated demo data, whose test split has 90 images (one image is
# 1.1 pp) and whose short from-scratch model is unsure of many of them. MAX_DROP=pp overrides.
MAX_DROP ?=
DEMO_GATE := 10

.PHONY: setup train convert test bench demo-data clean help

help:
	@echo "make train convert   train on DATA (default: generated demo data) and convert runs/latest to TFLite"
	@echo "make test            run the test suite"
	@echo "make bench           run the benchmarks (slow; see benchmarks/README.md)"
	@echo "overrides: DATA=dir EPOCHS=n IMG_SIZE=px WEIGHTS=auto|imagenet|none|file RUN=runs/NAME MAX_DROP=pp"

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(DEMO_DIR)/.complete: | $(STAMP)
	$(BIN)/crack data demo --out $(DEMO_DIR)

demo-data: $(DEMO_DIR)/.complete

train: setup $(if $(DATA),,$(DEMO_DIR)/.complete)
	$(BIN)/crack train --data $(if $(DATA),$(DATA),$(DEMO_DIR)) --epochs $(EPOCHS) \
		--img-size $(IMG_SIZE) --weights $(WEIGHTS) $(if $(NAME),--name $(NAME),)

convert: setup
	$(BIN)/crack convert --run $(RUN) --max-drop $(or $(MAX_DROP),$(shell grep -qs '"data": "$(DEMO_DIR)"' $(RUN)/options.json && echo $(DEMO_GATE) || echo 1.0))

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs data/demo .pytest_cache
