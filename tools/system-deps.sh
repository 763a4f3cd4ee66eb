#!/bin/sh
# Installs the Debian packages `make` needs, on Debian 12 or 13 alike: the
# list below has the same names on both, and the CPython test package is
# the one of the host's own interpreter (/usr/bin/python3: 3.11 on Debian 12,
# 3.13 on Debian 13), which the system-PyGObject run needs (test.test_asyncio's
# TLS certificates).  Only missing packages are installed.  dbus-daemon and the
# GStreamer ones are for tests/test_dbus.py and tests/test_gstreamer.py (a
# private bus, real pipelines).
set -eu
PACKAGES="gcc pkg-config libglib2.0-dev libgirepository1.0-dev libcairo2-dev
gir1.2-glib-2.0 libasan8 libubsan1 python3 python3-gi python3-venv python3-dev
gir1.2-gtk-4.0 gir1.2-gtk-3.0 xvfb imagemagick wrk debootstrap git
dbus-daemon gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base gir1.2-gst-plugins-base-1.0"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
updated=""
install() {
    missing=""
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    [ -n "$missing" ] || return 0
    echo "installing:$missing"
    if [ -z "$updated" ]; then
        $SUDO apt-get update -qq
        updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
}
# shellcheck disable=SC2086
install $PACKAGES
V=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
install "libpython$V-testsuite"
