# One set-up command (`make install`) and one test command (`make test`); see README.md.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test

install:
	@$(PYTHON) -c 'import sys; sys.exit(None if sys.version_info[:2] == (3, 11) else "tff_sparsify needs Python 3.11, found %d.%d at $(PYTHON): TensorFlow Federated 0.87 and TensorFlow 2.14 have no wheels for it. Install Python 3.11 and run: make install PYTHON=/path/to/python3.11" % sys.version_info[:2])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --no-deps -r requirements.txt
	$(BIN)/pip install --no-deps -e .
	$(BIN)/python -c "import tensorflow_federated, tff_sparsify; print('tff_sparsify installed in $(VENV)')"

test:
	$(BIN)/python -m pytest
