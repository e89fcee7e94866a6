#!/bin/sh
# setup-deps.sh — installs the Debian packages qprobe builds and runs with, when missing.
# Called by make when pkg-config or gnuplot cannot find one of them.
set -e
PKGS="libsqlite3-dev libcjson-dev libopenblas-dev libpcre2-dev gnuplot-nox pkg-config"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Optional: headless chromium screenshots the HTML report in tests/test_report.c (which skips
# without it). Failing to install it never fails the build.
optional=""
command -v chromium >/dev/null 2>&1 || optional="chromium"
[ -z "$missing" ] && [ -z "$optional" ] && exit 0
if [ -z "$missing" ] && { [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; }; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "qprobe: missing Debian packages:$missing; run as root: apt-get install$missing" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "qprobe: missing packages:$missing, and apt-get is not available; install them by hand" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ -n "$missing" ]; then
    echo "qprobe: installing$missing" >&2
    apt-get install -y -q $missing >&2 || { apt-get update -q >&2 && apt-get install -y -q $missing >&2; }
fi
if [ -n "$optional" ]; then
    echo "qprobe: installing $optional (optional, for the report test)" >&2
    apt-get install -y -q $optional >&2 || { apt-get update -q >&2 && apt-get install -y -q $optional >&2; } ||
        echo "qprobe: could not install $optional; the report's browser test will be skipped" >&2
fi
