# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint emulator test-localstack bench clean webapp loadtest chaos feed catchup

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m eventstore_async.demo

test: $(STAMP)
	$(PY) -m pytest

# Contract tests against LocalStack (see localstack/README.md); start it first.
test-localstack: $(STAMP)
	EVENTSTORE_TEST_ENDPOINT_URL=$${EVENTSTORE_TEST_ENDPOINT_URL:-http://127.0.0.1:4566} AWS_ACCESS_KEY_ID=$${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=$${AWS_SECRET_ACCESS_KEY:-test} AWS_REGION=$${AWS_REGION:-us-east-1} $(PY) -m pytest -k endpoint

lint: $(STAMP)
	$(VENV)/bin/ruff check eventstore_async tests benchmarks examples
	$(VENV)/bin/ruff format --check eventstore_async tests benchmarks examples
	$(VENV)/bin/mypy

# The emulator keeps its state in a git-ignored directory of the project across restarts;
# `make emulator EMULATOR_ARGS=` for memory only, or `EMULATOR_ARGS="--data-dir DIR --port N"`.
EMULATOR_ARGS ?= --data-dir .emulator-data

emulator: $(STAMP)
	$(PY) -m eventstore_async.emulator $(EMULATOR_ARGS)

# Client CPU, throughput and latency against stock aiobotocore and boto3 in threads
# (benchmarks/README.md). `make bench BENCH_ARGS=--quick` for a short run; see --help.
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

# The example web app (examples/webapp.py) and the seed's load test against it
# (benchmarks/loadtest.py, see benchmarks/README.md). `make webapp WEBAPP_ARGS=--memory`,
# `make loadtest LOADTEST_ARGS=--find-max`; see --help of each.
WEB_STAMP := $(VENV)/.installed-web
WEBAPP_ARGS ?= --emulator
LOADTEST_ARGS ?=

$(WEB_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,web]'
	touch $(WEB_STAMP)

webapp: $(WEB_STAMP)
	$(PY) -m examples.webapp $(WEBAPP_ARGS)

loadtest: $(WEB_STAMP)
	$(PY) -m benchmarks.loadtest $(LOADTEST_ARGS)

# The chaos run (tests/chaos/run.py): writer processes append through a fault-injecting
# proxy, then a checker reads the table directly; prints the figures, exits 1 on any
# violation. `make chaos CHAOS_ARGS="--seed 2 --emulate-request-tokens --offload-ratio 0.1"`.
CHAOS_ARGS ?=

chaos: $(STAMP)
	$(PY) -m tests.chaos.run $(CHAOS_ARGS)

# The global feed's cost to appends, and a subscription projecting it live while several
# processes append: every change set delivered once, in per-aggregate order, lag printed.
feed: $(STAMP)
	$(PY) benchmarks/bench_feed.py

# Catch-up (the reader before and now, in one run) and feed writes under a simulated
# 10 ms per request (README "Catch-up throughput", "Feed writes under latency").
catchup: $(STAMP)
	$(PY) benchmarks/bench_catchup.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
