# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.raiox-installed

.PHONY: demo test env clean chromium

# torch and torchvision are pinned to the builds this machine (and CI) has on local disk.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/raiox demo --json

test: $(STAMP) chromium
	$(BIN)/ruff check lib tests functions
	$(BIN)/python -m pytest

# The admin page's browser tests drive Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

clean:
	rm -rf $(VENV) .raiox .pytest_cache
