# The two commands of the README:  `make book`  and  `make test`.
# Both create .venv/ on first use (requirements.txt + lsutils, editable) and repair it when it is broken
# (tools/setup.sh; it fails loudly, and the stamp below is written only by a set-up that succeeded).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY := .venv/bin/python
STAMP := .venv/.lsutils-setup
NBVAL := -p no:cacheprovider --nbval-lax --nbval-current-env --sanitize-with tests/nbval_sanitize.cfg

.PHONY: book test setup unit nbval book-committed browser bench gpu-plan outputs test-gpu lab clean help

help:
	@echo "make book   - set up, execute every chapter (cached; profile from LSUTILS_PROFILE, default cpu/gpu) and build _build/html"
	@echo "make test   - set up, unit tests, every chapter under nbval (smoke profile, network off), book build with -W, browser tests"
	@echo "make bench  - lsutils trainer vs a DataLoader loop, samples/s and their ratio"
	@echo "make gpu-plan - estimated Colab T4 minutes per chapter in the gpu profile, from the book's run log (benchmarks/run_log_cpu.jsonl)"
	@echo "make outputs - re-execute every chapter in place with the cpu profile (committed outputs)"
	@echo "make test-gpu - every chapter under nbval in the gpu profile (on a CUDA machine), with per-chapter times"
	@echo "make lab    - set up, then open the chapters in JupyterLab with the book's environment (.venv)"
	@echo "make setup  - only the set-up: .venv (recreated if broken) and Fashion-MNIST (downloaded once if needed)"

# The stamp (written by tools/setup.sh itself, last) re-runs the full set-up when a requirements file changes;
# `--quick` then checks, every time, that .venv still works and the data is there, and repairs what is not.
setup: $(STAMP)
	@bash tools/setup.sh --quick
$(STAMP): requirements.txt requirements-book.txt pyproject.toml tools/setup.sh tools/fetch_data.py
	bash tools/setup.sh

book: setup
	$(PY) tools/book.py execute

test: setup unit nbval book-committed browser
	@echo "==> make test: all passed"

unit: setup
	@echo "==> 1/4 unit tests and the docstrings' examples (network off)"
	tools/netoff.sh $(PY) -m pytest tests/ lsutils/ -q -p no:cacheprovider --ignore=tests/browser

nbval: setup
	@echo "==> 2/4 every chapter under nbval, smoke profile (network off)"
	LSUTILS_PROFILE=smoke tools/netoff.sh $(PY) -m pytest $(NBVAL) chapters/

book-committed: setup
	@echo "==> 3/4 the book from the committed outputs, warnings as errors"
	$(PY) tools/book.py committed

browser: setup
	@echo "==> 4/4 the built book and the notebooks as JupyterLab shows them, in headless Chromium (network off; screenshots in _build/screenshots/)"
	tools/netoff.sh $(PY) -m pytest tests/browser -q -p no:cacheprovider -rs

test-gpu: setup
	@$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu needs a CUDA GPU (torch.cuda.is_available() is False)')"
	LSUTILS_PROFILE=gpu $(PY) -m pytest $(NBVAL) --durations=0 chapters/

bench: setup
	$(PY) benchmarks/bench_trainer.py

# Models per chapter from the chapters' run log (tools/execute.py writes _build/runs/<chapter>.jsonl; the committed
# benchmarks/run_log_cpu.jsonl is one cpu-profile run), mapped to the gpu profile; fails if a chapter exceeds 15 min.
gpu-plan: setup
	$(PY) tools/gpu_plan.py $(or $(RUN_LOG),benchmarks/run_log_cpu.jsonl)

outputs: setup
	LSUTILS_PROFILE=cpu $(PY) tools/execute.py

# JupyterLab from .venv, rooted at chapters/ (kernels start there, as in the book); root needs --allow-root
lab: setup
	.venv/bin/jupyter lab chapters/ $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf _build
