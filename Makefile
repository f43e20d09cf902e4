# gpufleet.node developer entry points. Run as root on Debian 12 (see README.md).
SHELL := /bin/bash
LAB := bash lab/lab.sh
VENV := .venv/bin
LAB_NODES ?= 2
export LAB_NODES

.PHONY: help lab lab-down lab-status test lint unit sanity molecule verify report-screenshot ee bench

help:
	@echo "make lab       - build the offline lab ($(LAB_NODES) nodes) and run site.yml on it"
	@echo "make lab-down  - remove the lab (LAB_PURGE=1 also removes its images and state)"
	@echo "make test      - lint, unit tests and every Molecule scenario (what CI runs)"
	@echo "make verify    - verify.yml on the lab: fleet report in fleet-report/"
	@echo "make report-screenshot - docs/fleet-report.png of fleet-report/fleet-report.html (headless Chromium)"
	@echo "make bench     - performance bench on the lab: Ansible vs shell floor, no-op reruns, 1/4/8 nodes (BENCH=docker,noop; see bench/README.md)"
	@echo "make ee        - execution environment build context in build/ee/ (for AWX; see README.md)"

lab:
	$(LAB) up
	$(VENV)/ansible-playbook site.yml -i inventories/lab
	$(LAB) status

lab-down:
	$(LAB) down

lab-status:
	$(LAB) status

test:
	bash tests/run.sh

lint:
	TEST_STAGES="lint" bash tests/run.sh

unit:
	TEST_STAGES="unit" bash tests/run.sh

molecule:
	TEST_STAGES="molecule" bash tests/run.sh

sanity:
	TEST_STAGES="sanity" bash tests/run.sh

verify:
	$(VENV)/ansible-playbook playbooks/verify.yml -i inventories/lab

report-screenshot:
	bash docs/screenshot-report.sh fleet-report/fleet-report.html docs/fleet-report.png

bench:
	bash bench/bench.sh

# Offline: builds the collection tarball and writes the context; the image is built from it with
# podman or docker (README.md). The tarball's name is in execution-environment.yml; ansible-builder
# only warns when it is missing, so a version bump that misses that file stops here.
ee: COLLECTION_VERSION = $(shell $(VENV)/python -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["version"])')
ee:
	rm -rf build/collection build/ee
	$(VENV)/ansible-galaxy collection build --output-path build/collection
	$(VENV)/ansible-builder create --file execution-environment.yml --context build/ee --output-filename Containerfile
	@test -f build/ee/_build/collections/gpufleet-node-$(COLLECTION_VERSION).tar.gz && \
	  grep -qx -- '- name: collections/gpufleet-node-$(COLLECTION_VERSION).tar.gz' build/ee/_build/requirements.yml || \
	  { echo "execution-environment.yml does not name gpufleet-node-$(COLLECTION_VERSION).tar.gz (galaxy.yml's version)" >&2; exit 1; }
