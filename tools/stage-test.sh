#!/bin/sh
# Builds glibloop with -Werror for the Python of a venv (meson and ninja from
# that venv) into BUILD, stages the package in BUILD/stage and runs the suite
# there with pytest ARGS, from tests/.  Used for the interpreters whose venv
# glibloop is not pip-installed into: Debian's own (tools/debian-root.sh, the
# system-PyGObject run of the Makefile).
#
#   tools/stage-test.sh VENV BUILD [pytest args]
set -eu
VENV=${1:?usage: stage-test.sh VENV BUILD [pytest args]}
BUILD=${2:?usage: stage-test.sh VENV BUILD [pytest args]}
shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
case "$VENV" in /*) ;; *) VENV=$ROOT/$VENV ;; esac
export PATH="$VENV/bin:$PATH"
LOG=$BUILD.log  # shown only when the build fails
mkdir -p "$BUILD"
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release -Dwerror=true \
        -Dpython.install_env=auto >"$LOG" 2>&1 || { cat "$LOG"; exit 1; }
fi
ninja -C "$BUILD" >"$LOG" 2>&1 || { cat "$LOG"; exit 1; }
STAGE=$BUILD/stage
rm -rf "$STAGE"
mkdir -p "$STAGE/glibloop"
cp "$ROOT"/src/glibloop/*.py "$ROOT"/src/glibloop/*.pyi "$ROOT"/src/glibloop/py.typed "$STAGE/glibloop/"
cp "$BUILD"/_core*.so "$STAGE/glibloop/"
export PYTHONPATH=$STAGE
"$VENV/bin/python" -c '
import sys
try:
    import gi
    from gi.repository import GLib
    gi_ = f"PyGObject {gi.__version__}, GLib {GLib.MAJOR_VERSION}.{GLib.MINOR_VERSION}.{GLib.MICRO_VERSION}"
except ImportError:
    gi_ = "no PyGObject"
print(f"== the suite on Python {sys.version.split()[0]} ({sys.executable}), {gi_}")'
cd "$ROOT/tests"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
