#!/usr/bin/env bash
# Installs what Reelway needs on a fresh machine of this kind: ffmpeg/ffprobe (Debian),
# just (the rust-just npm package) and a Consul agent built from its MPL-2.0 Go module.
# Idempotent: each step is skipped when its tool is already there.
set -euo pipefail

cache="${REELWAY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reelway-tools}"
mkdir -p "$cache/bin"

log() { printf 'setup: %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo "$@"; else "$@"; fi
  else
    "$@"
  fi
}

install_ffmpeg() {
  if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then return; fi
  log "installing ffmpeg"
  need_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive need_root apt-get install -y -qq ffmpeg >/dev/null
}

# PostgreSQL server binaries, for the metadata tests' throwaway server. The image usually
# ships them; Debian's package is the fallback.
install_postgres() {
  if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then return; fi
  log "installing postgresql"
  need_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive need_root apt-get install -y -qq postgresql >/dev/null
}

install_just() {
  if command -v just >/dev/null 2>&1; then return; fi
  log "installing just (rust-just from npm)"
  npm install -g --silent rust-just@1.57.0 >/dev/null
}

buf_version=1.75.0
install_buf() {
  local dir="$cache/buf-$buf_version"
  if [ -x "$dir/node_modules/.bin/buf" ]; then return; fi
  log "installing buf $buf_version (npm @bufbuild/buf)"
  mkdir -p "$dir"
  npm install --prefix "$dir" --silent --no-audit --no-fund "@bufbuild/buf@$buf_version" >/dev/null
}

consul_version=1.14.11
install_consul() {
  local bin="$cache/bin/consul"
  # Read the version into a variable first: piping into `grep -q` under pipefail lets
  # grep's early exit kill consul with SIGPIPE and fail the check at random.
  local have=""
  if [ -x "$bin" ]; then have=$("$bin" version 2>/dev/null || true); fi
  case "$have" in *"v$consul_version"*) return ;; esac
  log "building consul $consul_version from its Go module (about 3 minutes)"
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work" "$bin.tmp"' EXIT
  (
    cd "$work"
    export GOFLAGS=-mod=mod
    dir=$(go mod download -json "github.com/hashicorp/consul@v$consul_version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    cp -r "$dir" src
    chmod -R u+w src
    cd src
    go mod edit -dropreplace=github.com/hashicorp/consul/api \
      -dropreplace=github.com/hashicorp/consul/sdk \
      -dropreplace=github.com/hashicorp/consul/proto-public
    go build -o "$bin.tmp" .
    mv "$bin.tmp" "$bin"
  )
  rm -rf "$work"
  trap - EXIT
}

case "${1:-all}" in
  ffmpeg) install_ffmpeg ;;
  just) install_just ;;
  consul) install_consul ;;
  buf) install_buf ;;
  consul-path) echo "$cache/bin/consul" ;;
  buf-path) echo "$cache/buf-$buf_version/node_modules/.bin/buf" ;;
  postgres) install_postgres ;;
  all) install_ffmpeg; install_postgres; install_just; install_buf; install_consul ;;
  *) echo "usage: setup.sh [all|ffmpeg|postgres|just|buf|consul|consul-path|buf-path]" >&2; exit 2 ;;
esac
