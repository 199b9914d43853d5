# renderfarm: `make run` runs the farm locally, `make test` runs every test.
# Both install what is missing first: Debian packages (when root or with sudo)
# and a virtualenv in .venv pinned by constraints.txt.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON := $(abspath $(PY))
# prometheus (promtool) and prometheus-alertmanager: the alert-rule tests and the live monitoring test
SYSTEM_PACKAGES := redis-server ffmpeg espeak-ng openssl prometheus prometheus-alertmanager
SYSTEM_BINARIES := redis-server ffmpeg ffprobe espeak-ng openssl promtool prometheus prometheus-alertmanager
INSTALL_STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help
.PHONY: help install system-deps run test test-fast bench bench-scale soak lint clean chart-pools manifests chart-lint monitoring otelcol s3-tools

help:
	@echo "make run     run the farm locally (Redis, API, workers, beat) in the foreground; MONITORING=1 adds Prometheus and Alertmanager"
	@echo "make test    install what is missing and run every test (unit, integration, e2e, k8s)"
	@echo "make bench   measure latency, throughput and overhead (writes bench/results/latest.json)"
	@echo "make bench-scale   how costs grow with 10^3..10^5 jobs and 10..1000 pools (~15 min)"
	@echo "make soak    fault soak: 500 jobs, 100 faults; prints duplicates, lost, stuck, time to recover"
	@echo "make cluster-up / cluster-down   a local Kubernetes (built from upstream, cached); REAL_NODE=1 adds a real node"
	@echo "make images  build the API, CPU worker and Redis images with buildah (build/images.env)"
	@echo "make manifests   regenerate the chart's pool list and the plain manifests in k8s/"
	@echo "make chart-lint  helm lint --strict of helm/renderfarm (the project's pinned helm)"
	@echo "make monitoring  regenerate the alert rules and Grafana dashboards (chart files and monitoring/)"
	@echo "make s3-tools    build the S3 server for tests and \`renderfarm local --s3\` (SeaweedFS, cached)"

system-deps:
	@missing=""; for b in $(SYSTEM_BINARIES); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages (missing:$$missing)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null \
	    || { echo "could not install:$$missing - install them with your package manager"; exit 1; }; \
	fi

$(INSTALL_STAMP): pyproject.toml constraints.txt
	@command -v python3 >/dev/null || { echo "python3 (3.11+) is required"; exit 1; }
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[gpu,operator,dev]'
	@rm -f $(VENV)/.installed-*; touch $@

install: system-deps $(INSTALL_STAMP)

run: install
	$(VENV)/bin/renderfarm local $(if $(MONITORING),--monitoring)

# The tools and images are independent builds (four from Go modules, one with
# buildah): make runs them side by side, so module downloads and links overlap
# with compiling, each one's output printed whole when it ends. No-ops when cached.
TEST_TOOLS := k8s-tools node-tools images otelcol s3-tools
test: install
	$(MAKE) --no-print-directory -j$(words $(TEST_TOOLS)) --output-sync=target $(TEST_TOOLS)
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-fast: install
	$(PY) -m pytest tests/unit

bench: install
	HF_HUB_OFFLINE=1 $(PY) bench/run.py

SOAK_ARGS ?= --jobs 500 --faults 100
soak: install
	$(PY) -m tests.soak.soak $(SOAK_ARGS)

# The chart's pool list comes from the registry (renderfarm.core); k8s/ is the chart
# rendered with default values. Tests fail when either is stale.
chart-pools: install
	$(PY) -m renderfarm.core.pool_catalog > helm/renderfarm/files/pools.json

# Alert rules and dashboards come from services/monitoring; a unit test fails when stale.
monitoring: install
	$(PY) -m renderfarm.monitoring.generate --write

manifests: chart-pools monitoring k8s-tools
	$(PY) helm/render.py --write

chart-lint: k8s-tools
	"$$(bash k8s/dev/build-tools.sh --print-bin-dir)/helm" lint --strict helm/renderfarm

# The S3-compatible server of the storage tests and `renderfarm local --s3`: SeaweedFS
# built from Go modules into a cache outside the clone (k8s/dev/build-s3.sh).
s3-tools:
	nice -n 10 bash k8s/dev/build-s3.sh

bench-scale: install
	HF_HUB_OFFLINE=1 $(PY) bench/bench_scale.py

# The OpenTelemetry Collector the tracing tests export to, from Go modules (no-op when cached).
otelcol:
	bash tests/otelcol/build.sh >/dev/null

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

include k8s/dev/cluster.mk
