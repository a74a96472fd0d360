# The two commands of README.md: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 50051
REPO ?= model_repository

.PHONY: setup serve lint test stubs demo-model

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first (a plain `torch` would pull the CUDA stack).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ./client -e ".[cpu,test]"
	touch $(STAMP)

setup: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/reward-server serve --model-repository $(REPO) --port $(PORT)

# The gates (pyproject.toml [tool.ruff], [tool.mypy]) run before the tests.
lint: $(STAMP)
	$(PY) -m ruff check server client/reward_client tests bench tools
	$(PY) -m mypy --strict -p reward_client
	$(PY) -m mypy -p reward_server

test: lint
	$(PY) -m pytest -q

stubs: $(STAMP)
	$(PY) tools/generate_protos.py

demo-model: $(STAMP)
	$(PY) -m reward_server.tiny_models $(REPO)
