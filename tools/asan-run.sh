#!/bin/sh
# Builds the extension with AddressSanitizer and UndefinedBehaviorSanitizer
# and runs the whole test suite against it.  The interpreter itself is not
# instrumented, so the ASan runtime is preloaded; PYTHONMALLOC=malloc lets
# ASan see every Python object allocation; any report fails the run.
set -eu
PY=${1:?usage: asan-run.sh PYTHON [pytest args]}
shift
case "$PY" in
    /*) ;;
    *) PY="$(pwd)/$PY" ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build/asan
STAGE=$BUILD/stage
MESON=$(dirname "$PY")/meson
NINJA=$(dirname "$PY")/ninja
if [ ! -f "$BUILD/build.ninja" ]; then
    "$MESON" setup "$BUILD" "$ROOT" --buildtype=debug -Dwerror=true \
        -Db_sanitize=address,undefined -Db_lundef=false \
        -Dc_args=-fno-sanitize-recover=all -Dc_args=-fno-omit-frame-pointer \
        -Dpython.install_env=auto >/dev/null
fi
"$NINJA" -C "$BUILD" >/dev/null
rm -rf "$STAGE"
mkdir -p "$STAGE/glibloop"
cp "$ROOT"/src/glibloop/*.py "$ROOT"/src/glibloop/*.pyi "$ROOT"/src/glibloop/py.typed "$STAGE/glibloop/"
cp "$BUILD"/_core*.so "$STAGE/glibloop/"
LIBASAN=$(gcc -print-file-name=libasan.so)
cd "$ROOT/tests"
# Leak checking is off: CPython keeps memory alive at exit by design; our
# own leaks are tested with refcount and fd checks in the suite.
env LD_PRELOAD="$LIBASAN" PYTHONMALLOC=malloc PYTHONPATH="$STAGE" \
    GLIBLOOP_EXPECT_BUILD=asan \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=0 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$PY" -m pytest -q -p no:cacheprovider "$@"
