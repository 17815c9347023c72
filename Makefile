# synthstudio: two commands for a fresh machine.
#   make demo   install everything, then run the main job
#   make test   install everything, then run the test suite

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synthstudio-installed
APT_PACKAGES := fluidsynth fluid-soundfont-gm timgm6mb-soundfont espeak-ng sox libsndfile1 chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup apt venv test demo clean

setup: apt $(STAMP)

# Debian packages: installed only when one is missing, so a second run costs a dpkg query.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

# The main job: render the demo arpeggio, then serve the app on http://localhost:8501.
demo: setup
	$(VENV)/bin/synthstudio demo --out out/demo.wav
	$(VENV)/bin/synthstudio app --port 8501

clean:
	rm -rf $(VENV) out .pytest_cache
