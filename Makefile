# glibloop: every target sets up what it needs (apt packages, .venv, pip).
#   make demo    run the headless demo
#   make test    build, run the tests, run them again on Debian's own Python
#                and PyGObject, on an AddressSanitizer + UndefinedBehaviorSanitizer
#                build, on the other CPythons installed (OTHER_PYTHONS), and on
#                Python 3.14 and 3.15 in a Debian sid root (SID_PYTHONS)
#   make bench   side-by-side benchmarks against asyncio, uvloop, gi.events,
#                rloop, veloxloop, loopmini (requirements/bench.txt)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

# Debian's own interpreter with Debian's own PyGObject (3.42 on Debian 12,
# 3.50 on Debian 13), glibloop built for that interpreter.
SYSTEM_VENV := .venv-system

# Other CPythons the suite also runs on, when installed (pyenv's on CI's image).
OTHER_PYTHONS ?= 3.12 3.13
# The Pythons of the Debian sid root (tools/debian-root.sh): PyGObject 3.58,
# GLib 2.90, GTK 4.24 from Debian's own packages.
SID_PYTHONS ?= 3.14 3.15

.PHONY: all demo test test-fast test-asan test-system-pygobject test-pythons test-sid bench build system-deps clean

all: build

system-deps: $(VENV)/.system-deps
$(VENV)/.system-deps: tools/system-deps.sh
	tools/system-deps.sh
	@mkdir -p $(VENV) && touch $@

$(VENV)/.deps: requirements/test.txt requirements/test-common.txt | $(VENV)/.system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/test.txt
	touch $@

build: $(VENV)/.deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pip install -q --no-build-isolation --no-deps \
	  -Cbuild-dir=build/release -Csetup-args=-Dwerror=true .

demo: build
	$(PY) examples/demo.py

test-fast: build
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-asan: $(VENV)/.deps
	tools/asan-run.sh $(PY) $(PYTEST_ARGS)

# Debian's interpreter and PyGObject, whatever their versions (the suite
# checks the version-dependent parts itself); CPython's own tests run on the
# other interpreters.
test-system-pygobject: $(VENV)/.system-deps
	test -x $(SYSTEM_VENV)/bin/python || /usr/bin/python3 -m venv --system-site-packages $(SYSTEM_VENV)
	$(SYSTEM_VENV)/bin/python -m pip install -q -r requirements/test-common.txt
	tools/stage-test.sh $(SYSTEM_VENV) build/system $(PYTEST_ARGS) --ignore=cpython

test-pythons: $(VENV)/.system-deps
	@for v in $(OTHER_PYTHONS); do tools/test-python.sh $$v $(PYTEST_ARGS) || exit 1; done

# Python 3.14 and 3.15 with Debian sid's PyGObject, GLib and GTK, in a root
# made with debootstrap and cached in /var/cache/glibloop (tools/debian-root.sh).
test-sid: $(VENV)/.system-deps
	@for v in $(SID_PYTHONS); do tools/debian-root.sh test $$v $(PYTEST_ARGS) || exit 1; done

test: test-fast test-system-pygobject test-asan test-pythons test-sid

# The peer loops only the benchmarks use; `make test` does not install them.
$(VENV)/.bench-deps: requirements/bench.txt | $(VENV)/.deps
	$(PY) -m pip install -q -r requirements/bench.txt
	touch $@

bench: build $(VENV)/.bench-deps
	$(PY) bench/run.py

clean:
	rm -rf build dist $(SYSTEM_VENV) .venv-3.*
