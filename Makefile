# glibloop: every target sets up what it needs (apt packages, .venv, pip).
#   make demo    run the headless demo
#   make test    build, run the tests, run them again with Debian's PyGObject
#                3.42, on an AddressSanitizer + UndefinedBehaviorSanitizer
#                build, and on the other CPythons installed (OTHER_PYTHONS)
#   make bench   side-by-side benchmarks against asyncio, uvloop, gi.events

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := gcc pkg-config libglib2.0-dev libgirepository1.0-dev \
                libcairo2-dev gir1.2-glib-2.0 libasan8 libubsan1 \
                python3-gi python3-venv python3-dev \
                gir1.2-gtk-4.0 gir1.2-gtk-3.0 xvfb imagemagick \
                libpython3.11-testsuite wrk
PYTEST_ARGS ?=

VENV342 := .venv-pygobject342

# Other CPythons the suite also runs on, when installed (pyenv's on CI's image).
OTHER_PYTHONS ?= 3.12 3.13

.PHONY: all demo test test-fast test-asan test-pygobject342 test-pythons bench build system-deps clean

all: build

system-deps: $(VENV)/.system-deps
$(VENV)/.system-deps: Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/.deps: requirements/test.txt | $(VENV)/.system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/test.txt
	touch $@

build: $(VENV)/.deps
	$(PY) -m pip install -q --no-build-isolation --no-deps \
	  -Cbuild-dir=build/release -Csetup-args=-Dwerror=true .

demo: build
	$(PY) examples/demo.py

test-fast: build
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) .

test-asan: $(VENV)/.deps
	tools/asan-run.sh $(PY) $(PYTEST_ARGS)

# Debian's interpreter with Debian's PyGObject 3.42 (no asyncio protocol),
# running the extension built above (same CPython 3.11 ABI).
test-pygobject342: build
	test -x $(VENV342)/bin/python || /usr/bin/python3 -m venv --system-site-packages $(VENV342)
	$(VENV342)/bin/python -c "import pytest, aiohttp, anyio, pytest_asyncio, build, mesonpy, uvloop" 2>/dev/null || \
	  $(VENV342)/bin/python -m pip install -q -c requirements/test.txt \
	    pytest aiohttp anyio pytest-asyncio build meson-python meson ninja uvloop
	rm -rf build/stage-342 && mkdir -p build/stage-342
	cp -r "$$($(PY) -c 'import glibloop, os; print(os.path.dirname(glibloop.__file__))')" build/stage-342/
	$(VENV342)/bin/python -c "import gi; assert gi.version_info[:2] == (3, 42), gi.version_info"
	cd tests && PYTHONPATH=../build/stage-342 ../$(VENV342)/bin/python -m pytest -q \
	  -p no:cacheprovider --ignore=cpython .

test-pythons: $(VENV)/.system-deps
	@for v in $(OTHER_PYTHONS); do tools/test-python.sh $$v $(PYTEST_ARGS) || exit 1; done

test: test-fast test-pygobject342 test-asan test-pythons

bench: build
	$(PY) bench/run.py

clean:
	rm -rf build dist $(VENV342) .venv-3.*
