# Two commands do everything: `make book` and `make test`. Both create .venv once (idempotent).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
# This machine's pip configuration lists local index folders that do not exist for most packages; hide that noise.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stabkit-installed

.PHONY: book test test-fast test-slurm lint lab bench clean venv check-book

venv: $(STAMP)

# Reinstalls only when the dependency files change. PYTHONWARNINGS: setuptools' build backend warns on
# every editable install, in a boxed "!!" block that reads like an error to a new user.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | { $(QUIET_PIP); }
	PYTHONWARNINGS=ignore::UserWarning $(PY) -m pip install --quiet -c constraints.txt -e ".[book,dev]" 2>&1 | { $(QUIET_PIP); }
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (stabkit)" >/dev/null
	touch $(STAMP)

book: $(STAMP)
	$(PY) tools/book.py run
	$(VENV)/bin/jupyter-book build -W -n --keep-going .
	@echo "Book: file://$(CURDIR)/_build/html/index.html"

# Open every page of the built book (make book first) in headless Chromium: raw TeX, broken images,
# external requests and console errors fail it; screenshots land in _build/site-check/. Chromium is
# Debian's package (installed here when missing and run as root); playwright comes with the [book] extra.
check-book: $(STAMP)
	@test -f _build/html/index.html || { echo "check-book: no _build/html/index.html: run make book first" >&2; exit 2; }
	@test -n "$$CHROMIUM" || command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "check-book: needs Chromium (Debian: apt-get install chromium) or CHROMIUM=/path" >&2; exit 2; fi; }
	$(PY) tools/check_site.py all _build/html --shots _build/site-check --json _build/site-check/report.json

test: $(STAMP)
	$(PY) -m pytest -q

# The suite without the tests marked slow (pytest -m "not slow"): under 2 minutes on 2 cores.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The tests marked slurm: sweeps through a one-node SLURM on this machine (tools/slurm_local.sh), which the tests
# start and stop. As root, the Debian packages are installed when missing; elsewhere the tests skip, saying why.
test-slurm: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then bash tools/slurm_local.sh install; fi
	$(PY) -m pytest -q -rs -m slurm tests/test_slurm.py

# ruff (configured in pyproject.toml: pyflakes, pyupgrade; notebooks included).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m benchmarks

# JupyterLab refuses to start as root without --allow-root (containers, CI machines): given only then. The
# notebooks print their glued numbers there (stabkit.report.page.show_glue: JupyterLab leaves {glue:text} raw).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/

clean:
	rm -rf _build book/executed .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
