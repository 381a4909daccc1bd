# Two commands do everything: `make book` and `make test`. Both create .venv once (idempotent).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
# This machine's pip configuration lists local index folders that do not exist for most packages; hide that noise.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stabkit-installed

.PHONY: book test lab bench clean venv

venv: $(STAMP)

# Reinstalls only when the dependency files change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | { $(QUIET_PIP); }
	$(PY) -m pip install --quiet -c constraints.txt -e ".[book,dev]" 2>&1 | { $(QUIET_PIP); }
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (stabkit)" >/dev/null
	touch $(STAMP)

book: $(STAMP)
	$(PY) -m stabkit.book run
	$(VENV)/bin/jupyter-book build -W -n --keep-going .
	@echo "Book: file://$(CURDIR)/_build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf _build book/executed .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
