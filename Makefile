# Two commands on a fresh machine:
#   make train convert   set up, make the demo data, train on it, convert to TFLite
#   make test            set up and run the tests
# Real runs: make train DATA=path/to/images EPOCHS=20 IMG_SIZE=224 WEIGHTS=imagenet

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
CLUSTER_STAMP := $(VENV)/.installed-cluster
# The extras `make setup` installs at the versions of requirements.lock (used as constraints, so
# the lock's pins of other extras, such as `cluster`, install nothing here).
EXTRAS   := train,test,mqtt,quantizer

DATA     ?=
DEMO_DIR ?= data/demo
# The demo recipe (training/demo_data.py DEMO_EPOCHS, DEMO_IMG_SIZE, DEMO_BATCH_SIZE): figures
# in the README's first section; for real data pass your own.
EPOCHS   ?= 12
IMG_SIZE ?= 64
BATCH    ?= 32
# Empty: `none` on the demo data (its recipe and figures are from random initialisation, so the
# first run is the same with or without internet), `auto` on DATA (ImageNet weights when they can
# be had, else random with a warning).
WEIGHTS  ?=
RUN      ?= runs/latest
# pytest workers for `make test` (pytest-xdist): about half the CPU sits idle with one, as many
# tests wait on a subprocess; the integration tests stay on one (they start servers and clusters).
TEST_WORKERS ?= 2
NAME     ?=
# The accuracy gate of `crack convert` in percentage points; empty: the converter's own default.
MAX_DROP ?=

.PHONY: setup train convert test test-fast test-integration check-arm64 bench demo-data clean help

help:
	@echo "make train convert   train on DATA (default: generated demo data) and convert runs/latest to TFLite"
	@echo "make test            run the whole test suite (what CI runs)"
	@echo "make test-fast       the tests not marked slow (no ResNet50V2 builds), for quick loops"
	@echo "make test-integration  tests against a real MQTT broker, headless Chromium, a local Ray and two training workers, and the heavy benchmark smoke runs (CI runs both)"
	@echo "make bench           run the benchmarks (slow; see benchmarks/README.md)"
	@echo "make check-arm64     crack-edge score and verify on arm64 (Debian arm64 under qemu-user; root) against this machine"
	@echo "overrides: DATA=dir EPOCHS=n IMG_SIZE=px BATCH=n WEIGHTS=auto|imagenet|none|file (default: none on the demo data, auto on DATA) RUN=runs/NAME MAX_DROP=pp"

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=68" wheel  # the build backend (no build isolation)
	$(BIN)/pip install --quiet --no-build-isolation -c requirements.lock -e ".[$(EXTRAS)]"
	touch $(STAMP)

# The `cluster` extra (Ray, for `crack-edge score --engine ray`): heavy, so only for the
# integration tests, not in setup.
$(CLUSTER_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --no-build-isolation -c requirements.lock -e ".[$(EXTRAS),cluster]"
	touch $(CLUSTER_STAMP)

# made again when its generator changes (the marker is older than training/demo_data.py)
$(DEMO_DIR)/.complete: training/demo_data.py | $(STAMP)
	$(BIN)/crack data demo --out $(DEMO_DIR)

demo-data: $(DEMO_DIR)/.complete

train: setup $(if $(DATA),,$(DEMO_DIR)/.complete)
	$(BIN)/crack train --data $(if $(DATA),$(DATA),$(DEMO_DIR)) --epochs $(EPOCHS) \
		--img-size $(IMG_SIZE) --batch-size $(BATCH) --weights $(if $(WEIGHTS),$(WEIGHTS),$(if $(DATA),auto,none)) $(if $(NAME),--name $(NAME),)

convert: setup
	$(BIN)/crack convert --run $(RUN) $(if $(MAX_DROP),--max-drop $(MAX_DROP),)

test: setup
	$(BIN)/python -m pytest -m "not integration" -n $(TEST_WORKERS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not integration" -n $(TEST_WORKERS)

# Tests against real outside programs (an MQTT broker, headless Chromium): .ci/run installs them;
# against a local Ray cluster (the `cluster` extra, installed here) and two training workers; and
# the benchmark smoke runs that build and train ResNet50V2s (they keep `make test` under 10 min).
test-integration: $(CLUSTER_STAMP)
	$(BIN)/python -m pytest -m integration

# arm64 proven here (needs root; first run about 20 min on 2 cores, later about 8): edge/DEVICE.md
check-arm64: setup
	bash benchmarks/check_arm64.sh $(ARM64_ARGS)

bench: setup
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs data/demo .pytest_cache
