# tabserve — `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PORT ?= 3000
HOST ?= 0.0.0.0
# make serve: BentoML worker processes (an integer or cpu_count); service.py reads it.
WORKERS ?= $(or $(TABSERVE_WORKERS),1)
# make serve: where served rows and their ground truth are kept (POST /feedback, live
# quality); an embedded SQLite file by default, a postgresql:// URL for several replicas.
RECORD_URL ?= $(or $(TABSERVE_RECORD_URL),sqlite:///$(CURDIR)/.tabserve/record.db)
# make serve SHADOW=tabserve-challenger:latest: a second model scores every answered row
# off the response path (the pipeline imports @challenger under that name); empty: none.
SHADOW ?= $(TABSERVE_SHADOW_MODEL)
MODEL ?= tabserve
MODEL_TAG ?= $(MODEL):latest
COMMA := ,
IMAGE ?= tabserve:latest
PYTEST_ARGS ?=
# make loadtest: a running service at URL, USERS for DURATION; SHAPE=step|ramp for a load shape.
URL ?= http://localhost:$(PORT)
USERS ?= 32
SPAWN_RATE ?= 8
DURATION ?= 60s
SHAPE ?=
LOAD_RESULTS := load_tests/results
# make bench: extra arguments of `python -m load_tests.bench` (e.g. BENCH_ARGS=--quick,
# BENCH_ARGS="--profiles heavy --repeat 1", BENCH_ARGS="--workers 1,2" (one and two
# workers side by side), and
# BENCH_ARGS="--quick --only batched --against HEAD~1" for a change side by side).
BENCH_ARGS ?=

VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
# Embedded defaults: every piece of state lives inside the clone unless overridden.
export BENTOML_HOME ?= $(CURDIR)/.bentoml
export PATH := $(BIN):$(HOME)/.local/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
# MkDocs Material's banner about MkDocs 2 (the site builds with MkDocs 1.6, pinned in uv.lock).
export NO_MKDOCS_2_WARNING := 1
# Podman's configuration for these machines (deploy/image/containers.conf: runc, ulimits).
export CONTAINERS_CONF ?= $(CURDIR)/deploy/image/containers.conf

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: help
help: ## List every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: PORT=$(PORT) HOST=$(HOST) WORKERS=$(WORKERS) MODEL=$(MODEL) BENTOML_HOME=$(BENTOML_HOME)"

$(UV):
	@echo ">> installing uv (not found on PATH)"
	python3 -m pip install --quiet --user uv

# --compile-bytecode: every process imports MLflow, scikit-learn or BentoML, and where
# PYTHONDONTWRITEBYTECODE is set (as on the CI machines) nothing would ever be cached:
# each DVC stage, server and worker would compile them from source again (a promote
# stage took 14.6 s instead of 4.9 s). Compiling once at install costs about 30 s.
$(VENV)/.synced: pyproject.toml uv.lock Makefile | $(UV)
	$(UV) sync --locked --compile-bytecode
	@touch $@

.PHONY: setup
setup: $(VENV)/.synced ## Create the locked, byte-compiled environment in .venv (installs uv if missing)

.PHONY: system-deps
system-deps: ## Debian packages the tests use, if missing: chromium, postgresql, redis-server, prometheus, a JRE (Spark), a container engine
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		echo ">> installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@deploy/image/engine.sh >/dev/null  # the image tests: Docker, else podman and runc

.PHONY: train
train: setup ## Run the DVC pipeline (ingest → … → import into the BentoML store)
	$(BIN)/dvc repro

.PHONY: data-verify
data-verify: setup ## Re-hash the DVC cache; list corrupt objects (then: dvc pull)
	$(BIN)/python -m training.verify_cache

.PHONY: model
model: setup ## Train only if the BentoML store has no model yet
	@if [ -f "$(BENTOML_HOME)/models/$(MODEL)/latest" ]; then \
		echo ">> model $(MODEL):$$(cat $(BENTOML_HOME)/models/$(MODEL)/latest) found in $(BENTOML_HOME) (make train to retrain)"; \
	else \
		echo ">> no model $(MODEL) in $(BENTOML_HOME): training on the data in params.yaml (about a minute)"; \
		$(BIN)/dvc repro; \
	fi

.PHONY: serve
serve: model ## Set up, train if no model exists, then serve on PORT (default 3000) with WORKERS workers (SHADOW=tag: a shadow challenger)
	$(BIN)/tabserve init-local --base-url http://localhost:$(PORT)
	$(BIN)/tabserve check
	TABSERVE_WORKERS=$(WORKERS) TABSERVE_RECORD_URL=$(RECORD_URL) TABSERVE_SHADOW_MODEL=$(SHADOW) \
		$(BIN)/tabserve serve --host $(HOST) --port $(PORT)

.PHONY: requirements
requirements: setup ## Export the runtime requirements (no training/test tools) from uv.lock to build/
	@mkdir -p build
	$(UV) export --frozen --no-default-groups --no-emit-project --no-hashes \
		--format requirements-txt --output-file build/requirements-serve.txt --quiet

.PHONY: bento
bento: model requirements ## Build the bento: service code + champion model + pinned runtime requirements
	$(BIN)/bentoml build --output tag | tee build/bento-tag.txt

# TMPDIR: BentoML 1.4.39 copies the bento to a temporary build context and then refuses to
# read its own copy of docker.dockerfile_template there unless it lies under the working
# directory (resolve_user_filepath in bentoml/_internal/container/generate.py).
.PHONY: containerize
containerize: bento ## Build the image IMAGE from the bento: Docker, or podman where no Docker daemon runs
	@engine=$$(deploy/image/engine.sh) && \
	base=$$(sed -n 's/^ *base_image: *"\{0,1\}\([^" ]*\).*/\1/p' bentofile.yaml) && \
	deploy/image/base-image.sh "$$engine" "$$base" && \
	echo ">> bentoml containerize --backend $$engine → $(IMAGE)" && \
	mkdir -p build/containerize-tmp && \
	TMPDIR=$(CURDIR)/build/containerize-tmp $(BIN)/bentoml containerize \
		$$(sed -n 's/^__tag__://p' build/bento-tag.txt) --backend "$$engine" --image-tag $(IMAGE) && \
	deploy/image/image-size.sh "$$engine" $(IMAGE) "$$base"

.PHONY: image-size
image-size: ## Size of IMAGE, what its layers add to the base, and its largest layers
	@engine=$$(deploy/image/engine.sh) && \
	deploy/image/image-size.sh "$$engine" $(IMAGE) \
		"$$(sed -n 's/^ *base_image: *"\{0,1\}\([^" ]*\).*/\1/p' bentofile.yaml)"

.PHONY: import
import: setup ## Import the registry's @champion into the BentoML store (e.g. on a fresh CI runner)
	$(BIN)/python -m training.import_model

.PHONY: rollback
rollback: setup ## Point @champion back at VERSION=N and import it into the BentoML store
	@test -n "$(VERSION)" || { echo "usage: make rollback VERSION=<registered version>"; exit 2; }
	$(BIN)/python -m training.promote rollback --to $(VERSION)

.PHONY: push
push: setup ## Push DVC-tracked data and models to the DVC remote (local folder by default)
	$(BIN)/dvc push

.PHONY: mlflow-ui
mlflow-ui: setup ## Browse runs and the model registry (embedded SQLite store) on port 5000
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns/mlflow.db}" --port 5000

# make drift-report: an inference log (TABSERVE_INFERENCE_LOG_DIR, or one of its files) or a
# CSV/Parquet of rows, e.g. LOG=data/prepared/valid.parquet for a baseline page.
LOG ?=
OUT ?= build/drift-report.html

.PHONY: drift-report
drift-report: setup ## HTML page (OUT) of LOG's rows against the model's training reference, PSI per feature
	@test -n "$(LOG)" || { echo "usage: make drift-report LOG=<inference log dir or file | rows.csv | rows.parquet> [OUT=page.html]"; exit 2; }
	TABSERVE_MODEL_TAG=$(MODEL_TAG) $(BIN)/tabserve drift-report --log "$(LOG)" --out "$(OUT)"

# make live-report SNAPSHOT=1: also evidence/live.json, what `promote.evidence: live` reads.
SNAPSHOT ?=
# make export-labelled: where the labelled served rows go (a .parquet or .csv).
LABELLED ?= data/sources/served.parquet

.PHONY: live-report
live-report: setup ## Champion vs its shadow on the same labelled live rows: build/live-report.html (SNAPSHOT=1: evidence/live.json too)
	TABSERVE_RECORD_URL=$(RECORD_URL) $(BIN)/tabserve live-report $(if $(SNAPSHOT),--snapshot)

.PHONY: export-labelled
export-labelled: setup ## The labelled served rows (features and truths) as a dataset to train on (LABELLED=path)
	TABSERVE_RECORD_URL=$(RECORD_URL) TABSERVE_MODEL_TAG=$(MODEL_TAG) $(BIN)/tabserve export-labelled "$(LABELLED)"

# make score: INPUT (a .csv/.parquet file or a folder of parts) → OUTPUT (Parquet), with the
# registry's SCORE_MODEL on ENGINE (local | spark); SCORE_ARGS for the rest, e.g.
# SCORE_ARGS="--id-column customer_id --workers 2" or "--master spark://host:7077".
INPUT ?=
OUTPUT ?= build/scores.parquet
ENGINE ?= local
SCORE_MODEL ?= models:/$(MODEL)@champion
SCORE_ARGS ?=

.PHONY: score
score: setup ## Score INPUT (CSV/Parquet file or folder) into OUTPUT with the @champion; ENGINE=local|spark
	@test -n "$(INPUT)" || { echo "usage: make score INPUT=<file or folder> [OUTPUT=scores.parquet] [ENGINE=local|spark] [SCORE_ARGS=...]"; exit 2; }
	@if [ "$(ENGINE)" = spark ]; then $(MAKE) --no-print-directory system-deps >/dev/null; fi
	MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns/mlflow.db}" \
		$(BIN)/tabserve score "$(INPUT)" "$(OUTPUT)" --model "$(SCORE_MODEL)" --engine $(ENGINE) $(SCORE_ARGS)

# make bench-score: BENCH_SCORE_ARGS="--rows 1000000 --no-spark" for a shorter run.
BENCH_SCORE_ARGS ?=

.PHONY: bench-score
bench-score: setup system-deps ## Batch-scoring benchmark (about 15 min): by hand vs local (1, 2 workers) vs Spark on 1 M and 10 M rows → load_tests/results/score/
	$(BIN)/python -m load_tests.score_bench $(BENCH_SCORE_ARGS)

.PHONY: loadtest
loadtest: setup ## Locust against a running service (URL, USERS, SPAWN_RATE, DURATION, SHAPE=step|ramp)
	@mkdir -p $(LOAD_RESULTS)
	$(BIN)/python -m load_tests.payloads --bentoml-home $(BENTOML_HOME) --model-tag $(MODEL_TAG) --out $(LOAD_RESULTS)/rows.json
	TABSERVE_LOAD_ROWS=$(LOAD_RESULTS)/rows.json $(BIN)/locust \
		-f load_tests/locustfile.py$(if $(SHAPE),$(COMMA)load_tests/shapes/$(SHAPE).py) \
		--headless --host $(URL) $(if $(SHAPE),,-u $(USERS) -r $(SPAWN_RATE) -t $(DURATION)) \
		--csv $(LOAD_RESULTS)/loadtest --html $(LOAD_RESULTS)/loadtest.html --only-summary
	@echo ">> stats: $(LOAD_RESULTS)/loadtest_stats.csv, report: $(LOAD_RESULTS)/loadtest.html"

.PHONY: bench
bench: model ## Benchmark (about an hour): 3 model profiles × tabserve (batched, unbatched) and 4 baselines, 3 rounds; a login flood → load_tests/results/report.md
	$(BIN)/python -m load_tests.bench $(BENCH_ARGS)

# make soak: SOAK_ARGS="--minutes 5" for a shorter run (the suite runs a 60 s one).
SOAK_ARGS ?=

.PHONY: soak
soak: model ## Soak (20 min): mixed traffic at half the measured capacity; memory, files, threads, 5xx, p99 held → load_tests/results/soak/
	$(BIN)/python -m load_tests.soak $(SOAK_ARGS)

.PHONY: prometheus-rule
prometheus-rule: ## Regenerate deploy/k8s/prometheusrule.yaml from deploy/prometheus/alerts.yml
	python3 deploy/prometheus/prometheusrule.py

.PHONY: rules-test
rules-test: system-deps ## Check the Prometheus config and alert rules, run their unit tests (promtool)
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/alerts.test.yml
	python3 deploy/prometheus/prometheusrule.py --check

.PHONY: lint
lint: setup ## Ruff (lint + format check), mypy, and the layers' import contracts (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: format
format: setup ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: docs
docs: setup ## Build the documentation site (MkDocs, Material) into build/site; a broken link fails
	$(BIN)/mkdocs build --strict --site-dir build/site

DOCS_PORT ?= 8000
.PHONY: docs-serve
docs-serve: setup ## Serve the documentation site on DOCS_PORT (default 8000), rebuilt on every edit
	$(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

.PHONY: test
test: setup system-deps lint docs ## The whole suite: lint, types, the docs site, unit, pipeline, service, UI, image tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: setup ## Only the fast unit tests
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove pipeline outputs and caches (keeps .venv, MLflow, the BentoML store and the DVC remote)
	rm -rf data/raw data/prepared tuning/best_params.json models plots registry metrics.json \
		.pytest_cache .ruff_cache .mypy_cache
