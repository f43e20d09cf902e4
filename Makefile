# gpufleet.node developer entry points. Run as root on Debian 12 (see README.md).
SHELL := /bin/bash
LAB := bash lab/lab.sh
VENV := .venv/bin
LAB_NODES ?= 2
export LAB_NODES

.PHONY: help lab lab-down lab-status test lint unit molecule verify report-screenshot

help:
	@echo "make lab       - build the offline lab ($(LAB_NODES) nodes) and run site.yml on it"
	@echo "make lab-down  - remove the lab (LAB_PURGE=1 also removes its images and state)"
	@echo "make test      - lint, unit tests and every Molecule scenario (what CI runs)"
	@echo "make verify    - verify.yml on the lab: fleet report in fleet-report/"
	@echo "make report-screenshot - docs/fleet-report.png of fleet-report/fleet-report.html (headless Chromium)"

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

verify:
	$(VENV)/ansible-playbook playbooks/verify.yml -i inventories/lab

report-screenshot:
	bash docs/screenshot-report.sh fleet-report/fleet-report.html docs/fleet-report.png
