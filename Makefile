# `make demo` and `make test` work on a fresh machine with only Python 3.11 and pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_HOME ?= .requiem-demo

.PHONY: setup compile demo test bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# compat mode: a one-line .pth naming the checkout (requiem/tui and requiem/analytics are
	# symlinks to tui/ and analytics/), not setuptools' import-hook finder, whose imports cost
	# every CLI start ~15 ms.
	$(BIN)/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

# Bytecode for the checkout's own modules: with PYTHONDONTWRITEBYTECODE set (as on these
# machines) every CLI start would otherwise recompile them.
compile: $(BIN)/.installed
	@$(BIN)/python -m compileall -q requiem tui analytics >/dev/null

setup: $(BIN)/.installed compile
	@bash scripts/install-system-deps.sh

demo: setup
	$(BIN)/requiem --home $(DEMO_HOME) demo
	$(BIN)/requiem-tui --home $(DEMO_HOME)

test: setup
	$(BIN)/ruff check --select F,E9 --quiet requiem tui analytics tests benchmarks
	bash scripts/lint-imports.sh $(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider

bench: setup
	for b in benchmarks/*_bench.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_HOME) build *.egg-info benchmarks/.work
