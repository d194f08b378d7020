# The two entry points of the README. Both set up what they need first:
# a virtualenv in .venv with requirements.txt, and Fashion-MNIST's IDX files
# from Debian's dataset-fashion-mnist (no network beyond apt and PyPI).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist
KERNELS := asmnas_tf/kernels/_fused_attention.so
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup

demo: setup
	$(PY) bin/demo

# One pytest worker per core (pytest-xdist), each test file on one worker:
# the module fixtures (the bad-input corpus runs its 62 commands once) stay
# whole. The suite spent most of its time in one single-threaded Python
# process (tracing, imports, subprocess start-up): 1.1 of 2 cores busy.
# The longest files first (tests/conftest.py, FILE_SECONDS).
test: setup
	$(PY) -m pytest -q --durations=15 -n auto --dist loadfile --no-loadscope-reorder

setup: $(VENV)/.installed $(FASHION_MNIST) $(KERNELS)

# ASM's fused CPU kernels (asmnas_tf/kernels/fused_attention.py), ~10 s with
# g++. Without a compiler the package still runs, on TensorFlow ops (the
# same numbers, ASM's step ~15% slower on a CPU); it says so.
$(KERNELS): asmnas_tf/kernels/fused_attention.cc $(VENV)/.installed
	$(PY) -m asmnas_tf.kernels.fused_attention > /dev/null 2> $(VENV)/kernels-build.log || \
		{ tail -n 5 $(VENV)/kernels-build.log; echo "note: the fused kernels did not build; ASM runs on TensorFlow ops"; }

# The pinned set first, then this package on top of it (editable: the
# checkout's code is what runs; --no-deps: nothing beyond the pins).
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist
