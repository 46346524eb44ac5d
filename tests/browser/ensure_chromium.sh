#!/bin/sh
# Make sure tests/test_browser.py has a Chromium to drive; install Debian's when there is none.
#
# The browser test uses the system's Chromium (never `playwright install`, which downloads a
# browser from a CDN that CI cannot reach). It looks for $D2LOPT_CHROMIUM, then
# `chromium-headless-shell`, then `chromium`, as this script does. When none exists, this
# installs Debian's `chromium` package with apt-get: as root (CI), or through passwordless
# sudo. Elsewhere it says what to install and fails, so `make test` never silently skips the
# browser test.
set -eu

for candidate in "${D2LOPT_CHROMIUM:-}" chromium-headless-shell chromium; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
        exit 0
    fi
done

if [ -n "${D2LOPT_CHROMIUM:-}" ]; then
    echo "ensure_chromium: D2LOPT_CHROMIUM=$D2LOPT_CHROMIUM is not an executable" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: no Chromium and no apt-get. Install Chromium or Chrome and set" \
        "D2LOPT_CHROMIUM=/path/to/the/binary (or skip the browser test: pytest -m 'not browser')" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "ensure_chromium: no Chromium found; install it with: sudo apt-get install chromium" >&2
    exit 1
fi

echo "ensure_chromium: installing Debian's chromium for the browser test (about a minute)"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null 2>&1 || {
    echo "ensure_chromium: apt-get installed chromium but it is not on PATH" >&2
    exit 1
}
chromium --version 2>/dev/null || true
