# pyweb.stack developer entry points. `make demo` and `make test` are the two that matter; `make help` lists all.
# Every target installs what it needs (virtualenv, Docker engine, test images), so a fresh clone works as is.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# ansible-core 2.20+ needs Python >= 3.12 on the controller. Take the first interpreter that really is one:
# pyenv shims answer `command -v` even when they cannot run, so each candidate is executed to prove itself.
PYTHON ?= $(shell for p in python3.12 python3.13 python3.14 $(HOME)/.pyenv/versions/3.1[234]*/bin/python3; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)

VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
COLLECTION_LINK := .cache/collections/ansible_collections/pyweb/stack
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL := build/pyweb-stack-$(VERSION).tar.gz
# ansible-test needs the path to end in ansible_collections/<ns>/<name> and to lie outside this git checkout.
SANITY_ROOT := $(or $(TMPDIR),/tmp)/pyweb-stack-sanity/ansible_collections/pyweb/stack
SANITY_PYTHONS := $(CURDIR)/.cache/pythons
SANITY_TARGET_PYTHONS := 3.9 3.10 3.11 3.13 3.14

# Scenarios run on Debian 12; those whose roles take another code path on Debian 13 also run there: oracle_client
# (libaio1t64 and its library name). nginx's `http2` directive (1.25.1+) is one template branch, not worth a second
# full run in the CI budget: `make molecule MOLECULE_SCENARIOS=nginx MOLECULE_SCENARIOS_TRIXIE=nginx` runs it.
# The longest come first (measured in one `make test`): `make molecule` runs them in MOLECULE_LANES parallel
# lanes, each taking the next scenario in order.
# cluster (four hosts over SSH, the rolling rollout under load) is not in the list yet: in one `make test` beside two
# other lanes it took 2459 s (converge 545, idempotence 331, side_effect 1448: the check run and two rolling
# deploys of four hosts) and pushed the whole run past 70 minutes. `make molecule MOLECULE_SCENARIOS=cluster` runs
# it until faster site runs and merged scenarios make room.
MOLECULE_SCENARIOS ?= flask_spa django_channels gunicorn_systemd app oracle_client python_build celery nginx \
	supervisor capabilities firewalld
MOLECULE_SCENARIOS_TRIXIE ?= oracle_client
MOLECULE_LANES ?= 3
# Scenarios that share controller-side state run one after the other in one lane (none today: app, flask_spa
# and cluster deploy the same app, each from a wheelhouse cache of its own).
MOLECULE_TOGETHER ?=
TEST_DISTROS := bookworm $(if $(strip $(MOLECULE_SCENARIOS_TRIXIE)),trixie)

export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Host directory shared by every test host as /var/cache/apt/archives, one per release.
export PYWEB_APT_CACHE ?= $(CURDIR)/.cache/apt
# The cgroup v2 tree test hosts get as their /sys/fs/cgroup: `unified` on a hybrid v1/v2 host, the root on pure v2.
export PYWEB_CGROUP_V2_TREE ?= $(shell [ "$$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] && echo /sys/fs/cgroup/unified || echo /sys/fs/cgroup)

.PHONY: help venv link image build lint sanity units molecule galaxy test check demo demo-destroy demo-cluster \
	demo-cluster-destroy bench changelog lock clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "make: no Python >= 3.12 found (ansible-core 2.20+ needs it); set PYTHON=/path/to/python3.12" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed link ## Create .venv from the pinned requirements-dev.txt

link: $(COLLECTION_LINK) ## Make this checkout importable as the collection pyweb.stack

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../../.. $@

image: ## Make sure a Docker engine answers and the test host images are built (cached)
	scripts/ensure-docker.sh
	@for distro in $(TEST_DISTROS); do scripts/build-image.sh "$$distro"; done

lint: venv ## yamllint, ansible-lint (production profile), ruff, shellcheck
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	ruff format --check .
	shellcheck scripts/*.sh images/debian-systemd/*.sh .ci/run
	@# A template with only {{ }} substitutions is shell once they are replaced.
	sed "s/{{[^}]*}}/x/g" roles/nginx/templates/pyweb-nginx-reload.sh.j2 | shellcheck -s sh -

build: venv ## Build the collection tarball into build/
	mkdir -p build
	ansible-galaxy collection build --force --output-path build .

sanity: build ## ansible-test sanity on exactly what the tarball ships, with the local Python
	scripts/prepare-ansible-test.sh $(BIN)/python
	rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	tar -xzf $(TARBALL) -C $(SANITY_ROOT)
	cd $(SANITY_ROOT) && ansible-test sanity --venv --python $(shell $(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') --color no
	@# Modules run on the managed hosts' Python: compile and import them with every target version this machine has.
	@mkdir -p $(SANITY_PYTHONS) && for v in $(SANITY_TARGET_PYTHONS); do \
		for p in python$$v $(HOME)/.pyenv/versions/$$v.*/bin/python$$v /usr/bin/python$$v; do \
			"$$p" -c pass >/dev/null 2>&1 && { ln -sfn "$$(command -v "$$p")" $(SANITY_PYTHONS)/python$$v; break; }; done; \
		if [ -e $(SANITY_PYTHONS)/python$$v ]; then \
			(cd $(SANITY_ROOT) && PATH=$(SANITY_PYTHONS):$$PATH ansible-test sanity --venv --python $$v --test compile --test import --color no); \
		else echo "sanity: no Python $$v on this machine, compile/import on it not checked"; fi; \
	done

units: venv ## pytest on tests/unit
	@# The nginx traversal tests grant real POSIX ACLs on the controller: they need setfacl (Debian's acl).
	@command -v setfacl >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get install -y -qq acl >/dev/null; } || echo "units: no setfacl (package acl); the ACL grant test skips"
	PYTHONPATH=$(CURDIR)/.cache/collections pytest tests/unit

molecule: venv image ## Every scenario through check, converge, idempotence, verify, destroy (in parallel lanes)
	@mkdir -p $(PYWEB_APT_CACHE)
	@units=(); together=" $(subst +, ,$(MOLECULE_TOGETHER)) "; \
	for scenario in $(MOLECULE_SCENARIOS) $(filter-out $(MOLECULE_SCENARIOS),$(MOLECULE_SCENARIOS_TRIXIE)); do \
		case "$$together" in *" $$scenario "*) [ "$$scenario" = "$(firstword $(subst +, ,$(MOLECULE_TOGETHER)))" ] || continue; \
			group="$(subst +, ,$(MOLECULE_TOGETHER))";; *) group=$$scenario;; esac; \
		unit=""; for member in $$group; do \
			case " $(MOLECULE_SCENARIOS) " in *" $$member "*) unit="$$unit $$member:bookworm";; esac; \
			case " $(MOLECULE_SCENARIOS_TRIXIE) " in *" $$member "*) unit="$$unit $$member:trixie";; esac; \
		done; units+=("$${unit# }"); \
	done; \
	scripts/molecule-matrix.sh $(MOLECULE_LANES) "$${units[@]}"

galaxy: build ## Build the collection and run galaxy-importer on the tarball
	GALAXY_IMPORTER_CONFIG=$(CURDIR)/.config/galaxy-importer.cfg python -m galaxy_importer.main $(TARBALL)

changelog: venv ## Lint the changelog fragments
	antsibull-changelog lint

check: lint units sanity ## The quick loop: lint, units, sanity

test: lint changelog units sanity galaxy molecule ## Every gate CI runs

demo: venv ## Start a local test host, deploy the example stack with site.yml, check it on 127.0.0.1
	@# Only the image the demo host runs: `make image` would build every release the tests use.
	scripts/ensure-docker.sh
	scripts/build-image.sh bookworm
	@mkdir -p $(PYWEB_APT_CACHE)/bookworm
	PYWEB_TEST_DISTRO=bookworm molecule create -s demo
	ansible-playbook site.yml --inventory examples/flask_spa/inventory/demo.yml
	python scripts/demo-check.py pyweb-demo-bookworm

demo-destroy: venv ## Remove the demo host
	PYWEB_TEST_DISTRO=bookworm molecule destroy -s demo

# The cluster scenario's hosts (not while `make test` runs it: the same containers and network).
demo-cluster: venv ## Start four hosts (web, two app, worker+redis), deploy the example with site.yml over SSH, check each
	scripts/ensure-docker.sh
	scripts/build-image.sh bookworm
	PYWEB_TEST_DISTRO=bookworm molecule create -s cluster
	PYWEB_TEST_DISTRO=bookworm molecule prepare -s cluster
	@mkdir -p .cache/cluster && rm -f .cache/cluster/known_hosts
	ansible-playbook site.yml --inventory examples/flask_spa/inventory/cluster.yml
	python scripts/demo-cluster-check.py

demo-cluster-destroy: venv ## Remove the four demo hosts
	PYWEB_TEST_DISTRO=bookworm molecule destroy -s cluster

bench: venv ## Benchmarks; each prints ratios measured in one run
	python bench/venv_noop.py

lock: ## Re-resolve requirements-dev.in into requirements-dev.txt
	rm -rf .cache/lock && $(PYTHON) -m venv .cache/lock
	.cache/lock/bin/pip install --quiet -r requirements-dev.in
	{ echo "# Generated by 'make lock' from requirements-dev.in: the full pinned tool set for .venv (Python 3.12+)."; \
	  .cache/lock/bin/pip freeze --all | grep -v -E '^(pip|setuptools|wheel)=='; } > requirements-dev.txt

clean: ## Remove build outputs and caches, the apps' wheelhouses too (keeps .venv and images)
	rm -rf build .cache/sanity .cache/lock tests/output
	@# pyweb.stack.app's app_wheelhouse_controller_dir default: wheels built on this controller, one directory per app.
	rm -rf $(HOME)/.cache/pyweb.stack/wheelhouse
