# The two commands a newcomer needs: `make demo` and `make test`.
# Both install what is missing first (Debian packages as root, then .venv).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
APT_PACKAGES := openvswitch-switch mininet tshark iputils-ping iperf3 iproute2 ethtool tcpdump
STAMP_APT := $(VENV)/.apt-stamp
STAMP_PIP := $(VENV)/.pip-stamp
TOPO ?= topologies/two-dc.yaml
KEEP ?= 0

.PHONY: install demo test test-fast bench lab-down clean system-deps

install: $(STAMP_PIP)

system-deps: $(STAMP_APT)

$(STAMP_APT):
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "== installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP_PIP): requirements.txt constraints.txt pyproject.toml | $(STAMP_APT)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

demo: install
	KEEP=$(KEEP) $(VENV)/bin/lisp-ryu demo $(TOPO)

test: install
	$(VENV)/bin/python -m pytest tests

test-fast: install
	$(VENV)/bin/python -m pytest tests -m "not lab and not slow"

bench: install
	$(VENV)/bin/python -m bench

lab-down: install
	$(VENV)/bin/lisp-ryu lab down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
