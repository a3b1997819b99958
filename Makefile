# Two commands a newcomer needs: `make run` and `make test`. Each makes or reuses .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench lint venv clean browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "slack-agent-bot needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	@$(PY) -m bot run $(ARGS)

test: $(STAMP) browser
	@$(VENV)/bin/lint-imports --no-cache
	@$(PY) -m pytest --cov --cov-report=term $(ARGS)
	@$(PY) tests/coverage_floor.py

# The playground's browser test drives Debian's chromium (no browser download): installed
# here, once, when missing and this user may (root with apt-get); never from inside a test.
browser:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make test: installing Debian's chromium for the browser test (once)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test: chromium is missing; the browser test needs it: sudo apt-get install chromium"; \
	  fi; \
	fi

bench: $(STAMP)
	@$(PY) bench/intake.py
	@$(PY) bench/sse_parse.py
	@$(PY) bench/slack_stream.py
	@$(PY) bench/load.py
	@$(PY) bench/replicas.py

lint: $(STAMP)
	@$(PY) -m ruff check bot tests bench tools
	@$(PY) -m ruff format --check bot tests bench tools
	@$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) build *.egg-info
