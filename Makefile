# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.raiox-installed

.PHONY: demo test env clean

# torch and torchvision are pinned to the builds this machine (and CI) has on local disk.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/raiox db migrate
	$(BIN)/raiox db status

test: $(STAMP)
	$(BIN)/ruff check lib tests functions
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .raiox .pytest_cache
