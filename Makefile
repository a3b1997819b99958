# Two commands a newcomer needs: `make run` and `make test`. Each makes or reuses .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "slack-agent-bot needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	@$(PY) -m bot run $(ARGS)

test: $(STAMP)
	@$(VENV)/bin/lint-imports --no-cache
	@$(PY) -m pytest $(ARGS)

bench: $(STAMP)
	@$(PY) bench/intake.py
	@$(PY) bench/sse_parse.py
	@$(PY) bench/slack_stream.py
	@$(PY) bench/load.py

lint: $(STAMP)
	@$(PY) -m ruff check bot tests bench tools
	@$(PY) -m ruff format --check bot tests bench tools
	@$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) build *.egg-info
