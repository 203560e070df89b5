# Set-up and everyday commands. Everything lands in a virtual environment (.venv).
#
#   make demo    - install, train the bundled examples if missing, audit the digits example -> out/demo/
#   make test    - install, run the test suite
#
# TORCH chooses the torch build. The default pins 2.13.0 (a CPU wheel where the machine has
# one locally, the registry's CUDA build elsewhere). For the newest CUDA build: make demo TORCH=torch
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml Makefile
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	# torchattacks 3.5.1 declares requests~=2.25.1 and torchvision; its code needs neither.
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	$(PY) -m pip install -q --no-warn-conflicts -e ".[test]"
	$(PY) -m audit.envcheck
	touch $(STAMP)

install: $(STAMP)

examples/digits/model.safetensors: $(STAMP) examples/digits/train.py examples/digits/model.py
	$(PY) examples/digits/train.py

examples/credit/model.safetensors: $(STAMP) examples/credit/train.py examples/credit/model.py
	$(PY) examples/credit/train.py

demo: examples/digits/model.safetensors examples/credit/model.safetensors
	$(VENV)/bin/audit run examples/digits/model.safetensors --recipe recipes/digits.toml --out out/demo
	$(VENV)/bin/audit run examples/credit/model.safetensors --recipe recipes/credit.toml --out out/demo/credit
	@echo "demo reports: out/demo/report.html (digits), out/demo/credit/report.html (credit)"

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

docs: $(STAMP)
	$(PY) -m audit.recipe.docs > docs/recipe.md

clean:
	rm -rf $(VENV) out .pytest_cache
