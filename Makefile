# Every target creates .venv itself: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU build on this machine's disk (a loose range would pull CUDA wheels).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff format --check ewc_rl tests
	$(BIN)/ruff check ewc_rl tests
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check ewc_rl tests
	$(BIN)/ruff check ewc_rl tests
	$(BIN)/mypy

# The main job: MinAtar Breakout -> SpaceInvaders -> Freeway without a penalty, with EWC and with the study's
# recommended agent (docs/results/continual.md), seeds 0 and 1, two runs at a time (one torch thread each).
# Finished runs are skipped and interrupted ones resumed when it is repeated.
demo: $(STAMP)
	$(BIN)/ewc-rl compare --agents minatar-dqn minatar-ewc minatar-recommended --seeds 0 1 \
		--games MinAtar/Breakout,MinAtar/SpaceInvaders,MinAtar/Freeway --steps-per-game 100000 --workers 2 \
		--logdir runs/demo

clean:
	rm -rf $(VENV)
