#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's browser test (tests/decommission/
# test_dashboard_browser.py drives /usr/bin/chromium with Playwright's Python package; Playwright
# downloads no browser of its own). `make test` runs this when /usr/bin/chromium is missing; it
# says what it will install before it does anything.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
PACKAGES="chromium fonts-dejavu-core"
echo "install-chromium: the dashboard's browser test needs Chromium at /usr/bin/chromium," \
     "which is missing."
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-chromium: install it, then run make test again:" >&2
  echo "  Debian/Ubuntu: sudo apt-get install --no-install-recommends $PACKAGES" >&2
  echo "  elsewhere: install your system's Chromium and link its binary to /usr/bin/chromium" >&2
  exit 1
fi
echo "install-chromium: installing the Debian packages $PACKAGES with apt-get" \
     "(apt-get update, then apt-get install; about 120 MB to download, 400 MB on disk)."
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $PACKAGES
echo "install-chromium: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)."
