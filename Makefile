# The two commands a newcomer needs: `make demo` and `make test`.
# Both install what is missing first (Debian packages as root, then .venv).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# etcd-server/etcd-client (3.4): the real etcd cluster of tests/cluster (members on free loopback ports).
APT_PACKAGES := openvswitch-switch mininet tshark iputils-ping iperf3 iproute2 ethtool tcpdump etcd-server etcd-client
STAMP_APT := $(VENV)/.apt-stamp
STAMP_PIP := $(VENV)/.pip-stamp
# Open Overlay Router, the third-party LISP peer of tests/interop: extracted from its Debian
# package (and the libraries it needs that are not installed) into .cache/oor/root, never
# installed, so no service starts.  The tests run .cache/oor/root/usr/sbin/oor with
# LD_LIBRARY_PATH=.cache/oor/root/usr/lib/<multiarch>.
OOR_DIR := .cache/oor
STAMP_OOR := $(VENV)/.oor-stamp
TOPO ?= topologies/two-dc.yaml
KEEP ?= 0
# `make soak`: random lab topologies (lisp_ryu/lab/topology_random.py) seeds 0..SEEDS-1, full size;
# `make soak SEED=17` replays one seed (SIZE=small: the 2-3 site topologies of the normal run).
SEEDS ?= 50
SEED ?=
SIZE ?= full

.PHONY: install demo test test-fast soak bench lab-down clean system-deps oor

install: $(STAMP_PIP)

system-deps: $(STAMP_APT)

# Re-checked when this file changes (a package added here reaches machines set up before).
$(STAMP_APT): Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "== installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  case " $$missing " in *" etcd-server "*) \
	    if [ -d /run/systemd/system ]; then \
	      echo "== stopping and disabling the etcd service etcd-server installs (tests run their own members)"; \
	      systemctl disable --now etcd.service || true; \
	    fi;; \
	  esac; \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP_PIP): requirements.txt constraints.txt pyproject.toml | $(STAMP_APT)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

oor: $(STAMP_OOR)

$(STAMP_OOR): | $(STAMP_APT)
	@echo "== extracting openoverlayrouter (and the libraries it needs that are missing) into $(OOR_DIR)"
	@set -o pipefail; rm -rf $(OOR_DIR) && mkdir -p $(OOR_DIR)/debs $(OOR_DIR)/root && \
	deps() { apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
	         --no-replaces --no-enhances openoverlayrouter 2>/dev/null | grep -E '^[a-z0-9]' | sort -u; } && \
	want=$$(deps || { apt-get update -qq && deps; }) && \
	get=openoverlayrouter && for p in $$want; do [ $$p = openoverlayrouter ] || \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || get="$$get $$p"; done && \
	echo "   downloading: $$get" && \
	(cd $(OOR_DIR)/debs && apt-get download -qq $$get 2>&1 | { grep -v 'Download is performed unsandboxed' || true; }) && \
	for d in $(OOR_DIR)/debs/*.deb; do dpkg-deb -x $$d $(OOR_DIR)/root; done; \
	test -x $(OOR_DIR)/root/usr/sbin/oor && \
	! LD_LIBRARY_PATH=$$(echo $(OOR_DIR)/root/usr/lib/*-linux-gnu*) ldd $(OOR_DIR)/root/usr/sbin/oor | grep 'not found' && \
	mkdir -p $(VENV) && touch $@ \
	|| { echo "warning: openoverlayrouter could not be extracted: tests/interop will skip" >&2; rm -rf $(OOR_DIR); }

demo: install
	KEEP=$(KEEP) $(VENV)/bin/lisp-ryu demo $(TOPO)

test: install $(STAMP_OOR)
	$(VENV)/bin/python -m pytest tests

test-fast: install
	$(VENV)/bin/python -m pytest tests -m "not lab and not slow"

soak: install
	@seeds="$(if $(SEED),$(SEED),0-$$(( $(SEEDS) - 1 )))"; echo "== soak: random topologies, seeds $$seeds, size $(SIZE)"; \
	LISP_RYU_SEEDS="$$seeds" LISP_RYU_RANDOM_SIZE=$(SIZE) $(VENV)/bin/python -m pytest \
	  tests/lab/test_random_topologies.py -v -rf -p no:cacheprovider; rc=$$?; \
	[ $$rc = 0 ] || echo "== some seeds failed (FAILED ...[seedN] above); replay one: make soak SEED=N$(if $(filter-out full,$(SIZE)), SIZE=$(SIZE))"; \
	exit $$rc

bench: install
	$(VENV)/bin/python -m bench

lab-down: install
	$(VENV)/bin/lisp-ryu lab down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .cache
