# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.masksal-installed
ARGS ?=

.PHONY: demo test lint setup browser clean

# animal-mnist pins tensorflow, which masksal never imports: its data are installed alone.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev,bench,photos,export]'
	$(BIN)/python -m pip install -q --no-deps animal-mnist==0.4
	touch $(STAMP)

# tests/test_report_browser.py opens the HTML reports in Debian's Chromium (driven by Playwright
# from the dev extra; Playwright's own browser download is never used). Installed here when
# missing on a Debian machine run as root (CI); otherwise the hint, and the test says the same.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "Chromium is missing: install it (Debian: sudo apt-get install -y chromium) or set MASKSAL_CHROMIUM" >&2; \
	  fi; }

setup: $(STAMP) browser

demo: $(STAMP)
	$(BIN)/masksal demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

test: lint browser
	$(BIN)/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
