# The two commands of README.md: `make serve` and `make test`. Both set up .venv first, from
# constraints.txt: the exact versions CI tests and the image ships.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
# The demo listens on this machine only; HOST=0.0.0.0 (or [::]) serves other machines.
HOST ?= 127.0.0.1
PORT ?= 50051
REPO ?= model_repository
# PyPI's Linux torch wheel is the CUDA build (it pulls the nvidia-*-cu13 stack, gigabytes); the CPU
# build comes from PyTorch's own CPU index (torch alone, --no-deps: its dependencies come from PyPI
# in the next step, pinned by constraints.txt). Where that index cannot be reached, a torch 2.13.0+cpu
# wheel that pip finds locally (find-links, a mirror) is taken instead: the `+cpu` pin never matches
# PyPI's CUDA wheel, so neither step can install the CUDA stack by accident. GPU hosts: see
# docs/deploying.md (pip install -c constraints.txt ".[gpu]", PyPI's torch).
TORCH_VERSION := $(shell sed -n 's/^torch==//p' $(CONSTRAINTS))
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Tools that cannot share the test venv (checkov pins packaging and networkx below torch's needs).
TOOLS := .venv-tools
CHECKOV_VERSION := 3.3.30

.PHONY: setup serve lint test stubs demo-model tools

$(STAMP): pyproject.toml client/pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps --timeout 15 --retries 1 --index-url $(TORCH_CPU_INDEX) "torch==$(TORCH_VERSION)" \
	  || $(PY) -m pip install -q --no-deps "torch==$(TORCH_VERSION)+cpu"
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[cpu,test]"
	# PyTriton's client for the HTTP-front tests, without its pins (numpy<2, protobuf<7): see pyproject's test extra.
	$(PY) -m pip install -q --no-deps nvidia-pytriton==0.7.0
	# OpenRLHF's own /get_reward request code for the RL-route tests, without its GPU stack (vllm, deepspeed).
	$(PY) -m pip install -q --no-deps openrlhf==0.11.2
	$(PY) -c 'import hashlib; print(hashlib.sha256(open("$(CONSTRAINTS)", "rb").read()).hexdigest())' > $(STAMP)

setup: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/reward-server serve --model-repository $(REPO) --host $(HOST) --port $(PORT)

# The security linter of deploy/kubernetes lives in its own venv: tests/test_deploy.py finds it there.
$(TOOLS)/.installed:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q "checkov==$(CHECKOV_VERSION)"
	touch $@

tools: $(TOOLS)/.installed

# The gates (pyproject.toml [tool.ruff], [tool.mypy]) run before the tests.
lint: $(STAMP)
	$(PY) -m ruff check server client/reward_client tests bench tools deploy
	$(PY) -m ruff format --check server client/reward_client tests bench tools deploy
	$(PY) -m mypy --strict -p reward_client
	$(PY) -m mypy -p reward_server

test: lint $(TOOLS)/.installed
	$(PY) -m pytest -q

stubs: $(STAMP)
	$(PY) tools/generate_protos.py

demo-model: $(STAMP)
	$(PY) -m reward_server.offline.tiny_models $(REPO)
