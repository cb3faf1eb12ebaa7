PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run test lint typecheck bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install bytefreezer with its dev tools

FLUENT_CLIENT := tests/clients/fluent
LOKI_CLIENT := tests/clients/loki
KINESIS_SERVER := tests/clients/kinesis

system-deps: ## what the tests use besides Python: Prometheus and promtool, a NATS server, rsyslog with omelasticsearch and omrelp, systemd's journalctl and journal-remote, mosquitto, pmacct (an sFlow agent), Node.js's fluent-logger, winston-loki and kinesalite
	@installed() { for p in "$$@"; do \
		[ "$$(dpkg-query -W -f='$${db:Status-Status}' "$$p" 2>/dev/null)" = installed ] || return 1; done; }; \
	{ command -v prometheus && command -v promtool && command -v npm && command -v nats-server \
		&& installed rsyslog-elasticsearch rsyslog-relp systemd-journal-remote mosquitto pmacct; } >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			$$(command -v prometheus >/dev/null || echo prometheus) \
			$$(command -v nats-server >/dev/null || echo nats-server) \
			$$(installed rsyslog-elasticsearch rsyslog-relp || echo rsyslog rsyslog-elasticsearch rsyslog-relp) \
			$$(installed systemd-journal-remote || echo systemd-journal-remote) \
			$$(installed mosquitto || echo mosquitto) \
			$$(installed pmacct || echo pmacct) \
			$$(command -v npm >/dev/null || echo nodejs npm) >/dev/null && \
		{ ! command -v systemctl >/dev/null || $$SUDO systemctl disable --now \
			pmacctd nfacctd sfacctd uacctd >/dev/null 2>&1 || true; }; }
	@[ -d $(FLUENT_CLIENT)/node_modules/fluent-logger ] || \
		npm ci --prefix $(FLUENT_CLIENT) --no-audit --no-fund --silent
	@[ -d $(LOKI_CLIENT)/node_modules/winston-loki ] || \
		npm ci --prefix $(LOKI_CLIENT) --no-audit --no-fund --silent
	@[ -d $(KINESIS_SERVER)/node_modules/kinesalite ] || \
		npm ci --prefix $(KINESIS_SERVER) --no-audit --no-fund --silent

run: $(STAMP) ## start the embedded stack (control, receiver, piper, packer) under ./data
	$(BIN)/bytefreezer up --data-dir ./data

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	bash .ci/typecheck

test: system-deps lint typecheck ## lint, type-check and run the test suite
	$(BIN)/pytest -q

bench: $(STAMP) system-deps ## run the benchmarks and print ratios against baselines (the proxy's use mosquitto, systemd-journal-remote and pmacct)
	$(BIN)/python benchmarks/e2e.py
	$(BIN)/python benchmarks/transforms.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/end_to_end.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/stream.py
	$(BIN)/python benchmarks/s3_latency.py
	$(BIN)/python benchmarks/otlp.py
	$(BIN)/python benchmarks/proxy.py
	$(BIN)/python benchmarks/compat.py
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache $(FLUENT_CLIENT)/node_modules $(LOKI_CLIENT)/node_modules $(KINESIS_SERVER)/node_modules
