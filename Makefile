# The two commands of README.md: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 50051
REPO ?= model_repository

.PHONY: setup serve test stubs demo-model

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first (a plain `torch` would pull the CUDA stack).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ./client -e ".[cpu,test]"
	# PyTriton's client for the HTTP-front tests, without its pins (numpy<2, protobuf<7): see pyproject's test extra.
	$(PY) -m pip install -q --no-deps nvidia-pytriton==0.7.0
	# OpenRLHF's own /get_reward request code for the RL-route tests, without its GPU stack (vllm, deepspeed).
	$(PY) -m pip install -q --no-deps openrlhf==0.11.2
	touch $(STAMP)

setup: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/reward-server serve --model-repository $(REPO) --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q

stubs: $(STAMP)
	$(PY) tools/generate_protos.py

demo-model: $(STAMP)
	$(PY) -m reward_server.tiny_models $(REPO)
