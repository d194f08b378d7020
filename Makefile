# The two entry points of the README. Both set up what they need first:
# a virtualenv in .venv with requirements.txt, and Fashion-MNIST's IDX files
# from Debian's dataset-fashion-mnist (no network beyond apt and PyPI).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup

demo: setup
	$(PY) bin/demo

test: setup
	$(PY) -m pytest -q --durations=15

setup: $(VENV)/.installed $(FASHION_MNIST)

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist
