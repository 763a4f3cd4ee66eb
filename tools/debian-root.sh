#!/bin/sh
# The suite on another Debian release's stack, inside a root made with
# debootstrap from Debian's archive (by default sid: Python 3.14 and 3.15,
# GLib 2.90, PyGObject 3.58, GTK 4.24).
#
#   tools/debian-root.sh setup            make the root, or reuse the cached one
#   tools/debian-root.sh test X.Y [ARGS]  build glibloop in it for pythonX.Y and
#                                         run the suite (pytest ARGS) there
#   tools/debian-root.sh shell            a shell in the root, the checkout at /src
#
# The root lives outside the checkout, in $GLIBLOOP_ROOT_CACHE (default
# /var/cache/glibloop), so a warm run only builds and tests.  Its folder is named
# for a hash of what goes into it (the package lists, the requirements, the
# setup code below): a change makes a new root beside the old, so checkouts of
# different commits never remake a root another one is testing in.  Roots
# unused for two days are removed when a new one is made.  A root is made in a
# temporary folder renamed when complete, so an interrupted setup leaves no
# half-made root behind.
#
# The checkout is bind-mounted at /src; every build and the venvs' contents stay
# in the root, except the build folders, which are build/<suite>-X.Y of the
# checkout (so two checkouts can test at once).  Mounts are made in a private
# mount namespace (unshare) and vanish with the command.
set -eu

SUITE=${GLIBLOOP_ROOT_SUITE:-sid}
MIRROR=${GLIBLOOP_ROOT_MIRROR:-http://deb.debian.org/debian}
CACHE=${GLIBLOOP_ROOT_CACHE:-/var/cache/glibloop}
CHECKOUT=$(cd "$(dirname "$0")/.." && pwd)
# The Pythons tested in the root; each gets a venv at /opt/venv-X.Y.
PYTHONS=${GLIBLOOP_ROOT_PYTHONS:-"3.14 3.15"}

packages() {
    echo gcc pkg-config libglib2.0-dev ca-certificates git
    echo python3-gi gir1.2-glib-2.0 gir1.2-gtk-4.0 gir1.2-gtk-3.0
    echo xvfb xauth imagemagick
    echo dbus-daemon gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base gir1.2-gst-plugins-base-1.0
    for v in $PYTHONS; do
        echo "python$v python$v-dev python$v-venv libpython$v-testsuite"
    done
}

stamp() {
    {
        echo "$SUITE $MIRROR $PYTHONS"
        packages
        cat "$CHECKOUT/requirements/test-common.txt"
        sed -n '/^# --- root setup ---/,/^# --- end ---/p' "$0"
    } | sha256sum | cut -d' ' -f1
}

# in_root DIR CHECKOUT CMD...: runs CMD in the root at DIR with /proc, /dev, /sys
# mounted, and CHECKOUT at /src.
in_root() {
    unshare --mount --propagation private /bin/sh -eu -c '
        root=$1 checkout=$2; shift 2
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount --rbind /sys "$root/sys"
        mkdir -p "$root/src"
        mount --bind "$checkout" "$root/src"
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
            PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin "$@"
    ' in_root "$@"
}

setup() {
    if [ -f "$ROOT/.glibloop-stamp" ]; then
        touch "$ROOT/.glibloop-stamp"
        echo "== Debian $SUITE root: cached in $ROOT"
        return
    fi
    echo "== Debian $SUITE root: making it in $ROOT (debootstrap from $MIRROR)"
    for old in "$CACHE/$SUITE"-*/.glibloop-stamp; do
        if [ -f "$old" ] && [ -n "$(find "$old" -mtime +2)" ]; then
            rm -rf "$(dirname "$old")"
        fi
    done
    command -v debootstrap >/dev/null || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    }
    mkdir -p "$CACHE"
    tmp=$ROOT.new.$$
    rm -rf "$tmp"
    # --- root setup ---
    # The archive's snapshot may carry an expired Release file: apt is told not to
    # mind, here and inside the root.
    debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap-$SUITE.log" 2>&1 || {
        tail -20 "$CACHE/debootstrap-$SUITE.log"
        exit 1
    }
    echo 'Acquire::Check-Valid-Until "false";' >"$tmp/etc/apt/apt.conf.d/99glibloop"
    cp /etc/resolv.conf "$tmp/etc/resolv.conf"
    # pip in the root trusts what the host's pip trusts (a machine may reach
    # PyPI through a proxy with a certificate authority of its own).
    cp /etc/ssl/certs/ca-certificates.crt "$tmp/etc/host-ca-certificates.crt"
    printf '[global]\ncert = /etc/host-ca-certificates.crt\n' >"$tmp/etc/pip.conf"
    in_root "$tmp" "$CHECKOUT" apt-get update -qq
    in_root "$tmp" "$CHECKOUT" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $(packages) >/dev/null
    for v in $PYTHONS; do
        # System site-packages: Debian's PyGObject (python3-gi) is what is tested.
        in_root "$tmp" "$CHECKOUT" "python$v" -m venv --system-site-packages "/opt/venv-$v"
        in_root "$tmp" "$CHECKOUT" "/opt/venv-$v/bin/python" -m pip install -q --upgrade pip
        in_root "$tmp" "$CHECKOUT" "/opt/venv-$v/bin/python" -m pip install -q \
            -r /src/requirements/test-common.txt
    done
    in_root "$tmp" "$CHECKOUT" apt-get clean
    # --- end ---
    stamp >"$tmp/.glibloop-stamp"
    if [ -d "$ROOT" ]; then
        rm -rf "$tmp"  # another run made the same root meanwhile
    else
        mv "$tmp" "$ROOT"
    fi
}

ROOT=$CACHE/$SUITE-$(stamp | cut -c1-16)

case "${1:-}" in
    setup)
        setup
        ;;
    stamp)
        stamp
        ;;
    test)
        V=${2:?usage: debian-root.sh test X.Y [pytest args]}
        shift 2
        setup
        in_root "$ROOT" "$CHECKOUT" /bin/sh /src/tools/root-test.sh "$SUITE" "$V" "$@"
        ;;
    shell)
        setup
        in_root "$ROOT" "$CHECKOUT" /bin/bash
        ;;
    *)
        echo "usage: $0 setup | test X.Y [pytest args] | shell" >&2
        exit 2
        ;;
esac
