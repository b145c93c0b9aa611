# The README's two set-up commands. Both create (or reuse) .venv themselves.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
# Outside MCP peers for the tests (conformance suite, Inspector CLI, server-memory, Node 22).
NODE_TOOLS := tools/node
NODE_STAMP := $(NODE_TOOLS)/node_modules/.installed-stamp

PORT ?= 8000

# Debian's PostgreSQL 15 binaries (the tests' private cluster).
PG_BIN := /usr/lib/postgresql/15/bin

.PHONY: run demo inspect test lint bench fuzz browser postgresql
# Serve HTTP on 127.0.0.1:$(PORT) with examples/config.toml and the example webhook receiver (a free port) in the same
# process, so every route publishes; prints the URL, the agent token (kept in the data dir across runs), where published
# evidence lands, and the operator and Inspector commands.
run: $(STAMP)
	$(VENV)/bin/python examples/serve_http.py --port $(PORT)

# The governed flow played end to end over stdio (examples/agent_flow.py; its receiver takes a free port).
demo: $(STAMP)
	$(VENV)/bin/python examples/agent_flow.py

# The MCP Inspector CLI (pinned in tools/node, with the Node 22 it needs) against the `make run` server, as its agent:
#   make inspect ARGS="--method tools/list"
#   make inspect ARGS="--method tools/call --tool-name get_status"
#   make inspect TOKEN=imt_… URL=http://host:port/mcp ARGS="…"   (another server, another token)
INSPECTOR_DIR := $(NODE_TOOLS)/node_modules/@modelcontextprotocol/inspector-cli/build
DATA_DIR ?= .incident-monitor
URL ?= http://127.0.0.1:$(PORT)/mcp
inspect: $(NODE_STAMP)
	@token="$(TOKEN)"; if [ -z "$$token" ]; then \
		test -s $(DATA_DIR)/demo-agent-token || { echo "no TOKEN=… and no $(DATA_DIR)/demo-agent-token: start the server with make run first" >&2; exit 2; }; \
		token=$$(cat $(DATA_DIR)/demo-agent-token); fi; \
	cd $(INSPECTOR_DIR) && PATH="$(abspath $(NODE_TOOLS))/node_modules/.bin:$$PATH" \
		node cli.js --cli $(URL) --transport http --header "Authorization: Bearer $$token" $(ARGS)

# Lint and type-check (mypy: its config is in pyproject.toml), then the whole suite twice: on SQLite, then on a
# private PostgreSQL cluster (tests/support/pg_cluster.py) with every test on a fresh schema (SQLite-only tests
# deselected). pytest's exit 5 ("no tests collected") is a failure, not a pass.
test: $(STAMP) $(NODE_STAMP) browser postgresql
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc
	INCIDENT_MONITOR_TEST_DATABASE=postgres $(VENV)/bin/python -m pytest -m "not sqlite_only"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# PostgreSQL 15 from Debian's packages when missing (the tests start their own cluster; it needs no service).
postgresql:
	@test -x $(PG_BIN)/initdb || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)

# The property tests of the raw intake body and of tool inputs over stdio and Streamable HTTP, with ten times and more
# the generated cases CI runs (tests/server/test_http_intake_fuzz.py, tests/server/test_tool_input_fuzz.py).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/python -m pytest tests/server/test_http_intake_fuzz.py tests/server/test_tool_input_fuzz.py -q -s

# Every benchmark against its floor (benchmarks/run.py); writes benchmarks/results/latest.json. QUICK=1 for small sizes.
bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks $(if $(QUICK),--quick)

# The console's browser tests drive Debian's headless Chromium through Playwright (which cannot
# download a browser of its own here): installed once when missing, quietly.
browser:
	@command -v chromium-headless-shell >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell >/dev/null)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(NODE_STAMP): $(NODE_TOOLS)/package.json $(NODE_TOOLS)/package-lock.json
	cd $(NODE_TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)
