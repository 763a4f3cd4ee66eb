#!/bin/sh
# Runs the whole test suite on another CPython (e.g. 3.12) in its own venv,
# if that interpreter is on this machine (pyenv's, or pythonX.Y on PATH).
set -eu
V=${1:?usage: test-python.sh X.Y [pytest args]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=""
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$V".*/bin/python3 \
                 "$(command -v "python$V" 2>/dev/null || true)"; do
    # pyenv's shims exist for every version but refuse the inactive ones
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "" 2>/dev/null; then
        PY=$candidate
        break
    fi
done
if [ -z "$PY" ]; then
    echo "python$V is not installed on this machine: the suite was not run on it"
    exit 0
fi
VENV=$ROOT/.venv-$V
cd "$ROOT"
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements/test.txt
PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps \
    -Cbuild-dir="build/release-$V" -Csetup-args=-Dwerror=true .
echo "== the suite on $("$VENV/bin/python" -VV | head -1)"
cd tests
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
