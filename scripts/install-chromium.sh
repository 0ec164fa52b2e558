#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's browser test (tests/decommission/
# test_dashboard_browser.py drives it with Playwright's Python package, never a browser
# build of Playwright's own). `make test` runs this when /usr/bin/chromium is missing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-chromium: /usr/bin/chromium is missing; run as root: apt-get install -y chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
