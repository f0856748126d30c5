# Two entry points for a new machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default; on a GPU machine: make TORCH_SPEC="torch" demo
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-fast install dev clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/survey demo

# Everything (what CI runs, about 20-25 minutes here); test-fast: unit and property tests only (about 2-3 minutes).
test: $(VENV)/.installed
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) results reports/quick
