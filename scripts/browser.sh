#!/usr/bin/env bash
# Browser tests drive Debian's Chromium through Playwright; install it when missing.
set -euo pipefail
browser=${FIREFLY_CHROMIUM:-/usr/bin/chromium}
if [[ -x $browser ]]; then
  exit 0
fi
if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  echo "Installing Chromium for the browser tests..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "Chromium is missing at $browser: install Debian's chromium package (or set FIREFLY_CHROMIUM)." >&2
  exit 1
fi
