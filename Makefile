# torchclass task runner. `make help` lists the targets; each folder's own targets live in
# its *.mk file beside the code they drive, included below.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# One environment serves the hub, the students' servers, the graders and the tests. It is built
# from Debian's interpreter (not a per-user pyenv) so that student Unix users can execute it.
VENV ?= /opt/torchclass
BASE_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
PY := $(VENV)/bin/python
# The project's packages are imported from the checkout, not installed, so a change is live at once.
export PYTHONPATH := $(CURDIR)/hub:$(CURDIR)/grading:$(CURDIR)/course:$(CURDIR)/k8s
export TORCHCLASS_VENV := $(VENV)

REQUIREMENTS := images/notebook/requirements.txt images/hub/requirements.txt tests/requirements.txt
TEST_WORKERS ?= 2
TEST_ARGS ?=
BENCH_DIR ?= $(CURDIR)/bench-results

.PHONY: help install provision test lint bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | sort \
	  | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: $(REQUIREMENTS)
	@test -n "$(BASE_PYTHON)" || { echo "error: no python3 found; install python3 and python3-venv" >&2; exit 1; }
	@$(BASE_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "error: $(BASE_PYTHON) is older than Python 3.11" >&2; exit 1; }
	@test -x $(VENV)/bin/python || $(BASE_PYTHON) -m venv $(VENV) \
	  || { echo "error: could not create $(VENV); on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	@echo "Installing the torchclass environment into $(VENV) (first time: a few minutes)..."
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --progress-bar off $(addprefix -r ,$(REQUIREMENTS))
	@chmod -R a+rX $(VENV)
	@touch $@

# Students' kernels need a C++ compiler for torch.compile: installed here as root, else named.
install: $(VENV)/.installed ## create the Python environment and check its compiler (idempotent)
	@bash tests/provision classroom

provision: ## install what the tests need: Debian packages, a running Docker engine (root; idempotent)
	@bash tests/provision tests

# As root the suite provisions itself first; anyone else is told the one sudo command, and the
# tests that need what is missing skip, counted by reason at the end of pytest's summary.
test: install ## run the whole test suite (as root: provisions what it needs first)
	@bash tests/provision tests
	$(PY) -m pytest -n $(TEST_WORKERS) --durations=25 $(TEST_ARGS)

# Shell scripts are found by their shebang (several have no .sh suffix); import order (ruff's I)
# is enforced where the layers are declared and in the bottom layer.
SHELL_SCRIPTS = $(shell git ls-files | xargs grep -lE '^#!(/usr)?/bin/(env )?(ba)?sh' 2>/dev/null)
lint: install ## lint Python (ruff, import order on the layers), shell scripts (shellcheck), Dockerfiles (hadolint)
	$(VENV)/bin/ruff check hub grading course tests k8s images
	$(VENV)/bin/ruff check --select I tests/test_layers.py hub/torchclass_classroom hub/torchclass_exchange.py
	shellcheck $(SHELL_SCRIPTS)
	$(VENV)/bin/hadolint --failure-threshold warning $$(find images -name Dockerfile)

bench: install ## run every benchmark; results are written to bench-results/
	@mkdir -p $(BENCH_DIR)
	@for b in tests/bench/bench_*.py; do echo "== $$b"; $(PY) $$b --out $(BENCH_DIR) || exit 1; done
	@echo "Results in $(BENCH_DIR)"

clean: ## remove caches and benchmark results (never classroom data)
	rm -rf .pytest_cache bench-results test-artifacts
	find . -name __pycache__ -prune -exec rm -rf {} +

include hub/hub.mk grading/grading.mk course/course.mk images/images.mk k8s/k8s.mk
