# RaftKV's everyday commands. `make help` lists them.
#
# The Docker targets work on a machine that reaches no container registry: by default
# (IMAGES=local) the images are built from this host's binaries and Debian's packages by
# deployments/docker/build-local.sh. With a registry, IMAGES=upstream compiles RaftKV in a
# Rust image and runs the upstream HAProxy, Prometheus and Grafana images.
# See deployments/docker/README.md.

SHELL := /bin/bash
.DEFAULT_GOAL := help

IMAGES ?= local
DOCKER ?= docker
COMPOSE ?= $(shell command -v docker-compose >/dev/null 2>&1 && echo docker-compose || echo docker compose)
COMPOSE_PROJECT ?= raftkv
COMPOSE_FILE := deployments/docker/docker-compose.yml
RAFTKV_IMAGE ?= raftkv:latest
CERTS_DIR ?= certs
# Where `make docker-build` takes raftkv and kvcli from (IMAGES=local); set it to use binaries
# already built (e.g. target/debug) and skip the release build.
RAFTKV_BIN_DIR ?=
release_dir := $(or $(CARGO_TARGET_DIR),target)/release

export RAFTKV_IMAGE
ifeq ($(IMAGES),local)
export RAFTKV_HAPROXY_IMAGE ?= raftkv-local/haproxy:latest
export RAFTKV_PROMETHEUS_IMAGE ?= raftkv-local/prometheus:latest
else ifneq ($(IMAGES),upstream)
$(error IMAGES must be local or upstream, not '$(IMAGES)')
endif

compose := $(COMPOSE) -f $(COMPOSE_FILE) -p $(COMPOSE_PROJECT)

.PHONY: help build test ci docker-build docker-up-lb docker-up-monitoring docker-logs \
	docker-down docker-clean docker-test tls-certs

help: ## this list
	@awk -F ':.*## ' '/^[a-z-]+:.*## / { printf "  %-22s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## cargo build --release (binaries in target/release: raftkv, kvcli)
	cargo build --release

test: ## every test: cargo test --workspace
	cargo test --workspace

ci: ## what CI runs: formatting, clippy, the core-alone build, the tests (.ci/run)
	.ci/run

docker-build: ## the images (IMAGES=local: from this host's binaries; IMAGES=upstream: in a Rust image)
ifeq ($(IMAGES),local)
ifeq ($(RAFTKV_BIN_DIR),)
	cargo build --release -p api -p cli
	RAFTKV_BIN_DIR=$(release_dir) deployments/docker/build-local.sh raftkv haproxy prometheus
else
	RAFTKV_BIN_DIR=$(RAFTKV_BIN_DIR) deployments/docker/build-local.sh raftkv haproxy prometheus
endif
else
	DOCKER_BUILDKIT=1 $(DOCKER) build -f deployments/docker/Dockerfile -t $(RAFTKV_IMAGE) .
endif

docker-up-lb: ## 3 nodes behind HAProxy: http://localhost:8080 (nodes on 8081-8083)
	$(compose) up -d --no-build node1 node2 node3 haproxy
	@echo "HAProxy: http://localhost:$${RAFTKV_LB_PORT:-8080} (its page: /haproxy-stats); nodes: http://localhost:8081, 8082, 8083"

docker-up-monitoring: ## docker-up-lb plus Prometheus (:9999) and Grafana (:3000; IMAGES=upstream only)
ifeq ($(IMAGES),local)
	$(compose) --profile monitoring up -d --no-build node1 node2 node3 haproxy prometheus
	@echo "Prometheus: http://localhost:$${RAFTKV_PROMETHEUS_PORT:-9999}. Grafana has no Debian package to build a local image from:"
	@echo "it runs with IMAGES=upstream (grafana/grafana from a registry) or set RAFTKV_GRAFANA_IMAGE and run: $(compose) --profile monitoring up -d grafana"
else
	$(compose) --profile monitoring up -d
	@echo "Prometheus: http://localhost:$${RAFTKV_PROMETHEUS_PORT:-9999}; Grafana: http://localhost:$${RAFTKV_GRAFANA_PORT:-3000} (admin / \$$GRAFANA_ADMIN_PASSWORD, default admin), folder RaftKV"
endif

docker-logs: ## follow the deployment's logs
	$(compose) --profile monitoring logs -f --tail=100

docker-down: ## stop and remove the containers and network (the data volumes are kept)
	$(compose) --profile monitoring down

docker-clean: ## docker-down, and remove the data volumes too
	$(compose) --profile monitoring down -v

docker-test: ## the Compose test (deployments/test.sh; RAFTKV_BIN_DIR=target/debug skips the release build)
	RAFTKV_BIN_DIR=$(RAFTKV_BIN_DIR) deployments/test.sh

tls-certs: ## certificates for TLS and mTLS in ./certs (scripts/tls-certs.sh)
	scripts/tls-certs.sh $(CERTS_DIR)
