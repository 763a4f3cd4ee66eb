#!/bin/sh
# Inside a Debian root (tools/debian-root.sh, the checkout at /src): the suite
# on pythonX.Y of that root, built into the checkout's build/<suite>-X.Y.
set -eu
SUITE=${1:?usage: root-test.sh SUITE X.Y [pytest args]}
V=${2:?usage: root-test.sh SUITE X.Y [pytest args]}
shift 2
echo "== Debian $SUITE root"
exec /bin/sh /src/tools/stage-test.sh "/opt/venv-$V" "/src/build/$SUITE-$V" "$@"
