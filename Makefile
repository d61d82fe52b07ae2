# colorjax: `make demo` trains the main job, `make test` runs the test suite.
# Both start from nothing but Python >= 3.11 and make: `make install` builds .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo browser test clean

install: $(VENV)/.installed

# What the commands need: colorjax with TensorBoard logs (the demo's install).
$(VENV)/.installed-run: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[tensorboard]"
	touch $@

# And what the tests need: pytest, TensorFlow (TFDS's mock data), scikit-image, and PyTorch CPU
# only for the tests that compare against it (installs from a local wheel here).
$(VENV)/.installed: $(VENV)/.installed-run
	$(BIN)/pip install -q -e ".[tensorboard,pretrained,test]"
	$(BIN)/pip install -q torch==2.13.0
	touch $@

demo: $(VENV)/.installed-run
	$(BIN)/python -m colorjax.train --config configs/demo.py --workdir runs/demo

# Debian's chromium for the web page's browser test; installing needs root, and without it
# that one test is skipped (with the reason), so the rest of the suite still runs.
browser:
	command -v chromium || (apt-get update && apt-get install -y chromium) \
	  || echo "chromium not installed (needs root): the browser test will be skipped"

test: install browser
	$(BIN)/python -m pytest -n 2 -q tests

clean:
	rm -rf $(VENV) runs
