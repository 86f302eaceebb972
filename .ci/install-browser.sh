#!/usr/bin/env bash
# Installs Debian's headless Chromium and its WebDriver for tests/tests/browser.rs.
# Idempotent: does nothing when both are already installed. Needs root (or sudo) and Debian's
# package registry.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null; then
    as_root=(sudo)
else
    echo "install-browser: need root (or sudo) to install chromium and chromium-driver" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver

for bin in /usr/bin/chromium /usr/bin/chromedriver; do
    if [[ ! -x $bin ]]; then
        echo "install-browser: $bin is still missing after the install" >&2
        exit 1
    fi
done
