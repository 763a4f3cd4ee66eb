#!/bin/sh
# Inside a Debian root (tools/debian-root.sh): builds glibloop for pythonX.Y with
# -Werror into the checkout's build/<suite>-X.Y and runs the suite on that build.
set -eu
SUITE=${1:?usage: root-test.sh SUITE X.Y [pytest args]}
V=${2:?usage: root-test.sh SUITE X.Y [pytest args]}
shift 2
VENV=/opt/venv-$V
export PATH="$VENV/bin:$PATH"
BUILD=/src/build/$SUITE-$V
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" /src --buildtype=release -Dwerror=true \
        -Dpython.install_env=auto >"$BUILD.log" 2>&1 || { cat "$BUILD.log"; exit 1; }
fi
ninja -C "$BUILD" >"$BUILD.log" 2>&1 || { cat "$BUILD.log"; exit 1; }
STAGE=$BUILD/stage
rm -rf "$STAGE"
mkdir -p "$STAGE/glibloop"
cp /src/src/glibloop/*.py /src/src/glibloop/*.pyi /src/src/glibloop/py.typed "$STAGE/glibloop/"
cp "$BUILD"/_core*.so "$STAGE/glibloop/"
export PYTHONPATH=$STAGE
echo "== the suite in Debian $SUITE: $("$VENV/bin/python" -c '
import sys, gi
from gi.repository import GLib
print(f"Python {sys.version.split()[0]}, PyGObject {gi.__version__}, "
      f"GLib {GLib.MAJOR_VERSION}.{GLib.MINOR_VERSION}.{GLib.MICRO_VERSION}")')"
cd /src/tests
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
