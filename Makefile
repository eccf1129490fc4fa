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
	$(BIN)/ruff check ewc_rl tests
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ewc_rl tests
	$(BIN)/ruff format --check ewc_rl tests

DEMO := runs/demo-$(shell date +%Y%m%d-%H%M%S)
DEMO_ARGS := --games Pong,Breakout --steps-per-game 5000 --eval-every 2500 --eval-episodes 2 --seed 0 \
	--set dqn.learning_starts=1000 --set dqn.buffer_size=10000 --set dqn.target_update_interval=1000 \
	--set eval.max_episode_steps=2000 --set penalty.fisher_states=1000 --no-progress

demo: $(STAMP)
	$(BIN)/ewc-rl train --agent dqn $(DEMO_ARGS) --logdir $(DEMO)/dqn/seed-0
	$(BIN)/ewc-rl train --agent ewc $(DEMO_ARGS) --logdir $(DEMO)/ewc/seed-0
	@echo "compare both runs: $(BIN)/tensorboard --logdir $(DEMO)"

clean:
	rm -rf $(VENV)
