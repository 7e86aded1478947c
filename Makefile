# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.raiox-installed

.PHONY: demo test env docs clean chromium deployer-check

# torch and torchvision are pinned to the builds this machine (and CI) has on local disk.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/raiox demo --json

# Reference pages generated from the code (docs/settings.md, docs/cli.md) must be current: `make docs` rewrites them.
GENERATED_DOCS := docs/settings.md docs/cli.md

test: $(STAMP) chromium deployer-check
	$(BIN)/ruff check lib tests functions
	$(BIN)/cog --check $(GENERATED_DOCS)
	$(BIN)/python -m pytest

docs: $(STAMP)
	$(BIN)/cog -r $(GENERATED_DOCS)

# The admin page's browser tests drive Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# tests/tools/test_deployer.py runs the Functions deployer's own code on build/do (Node, from package-lock.json).
# Without npm those tests skip, except under CI (`.ci/run` sets CI), where they fail.
DEPLOYER_CHECK := infra/deployer-check
deployer-check: $(DEPLOYER_CHECK)/node_modules/.package-lock.json

$(DEPLOYER_CHECK)/node_modules/.package-lock.json: $(DEPLOYER_CHECK)/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix $(DEPLOYER_CHECK) --no-audit --no-fund; \
	 else echo "npm is missing: the deployer dry run (tests/tools/test_deployer.py) will skip"; fi

clean:
	rm -rf $(VENV) .raiox .pytest_cache $(DEPLOYER_CHECK)/node_modules
