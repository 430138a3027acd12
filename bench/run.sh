#!/usr/bin/env bash
# End-to-end benchmark: agenda vs redis (appendfsync always) vs etcd, replication,
# catch-up, py-spy profile, ablations. Installs what is missing, starts every
# server itself on free 127.0.0.1 ports in a temp folder and stops each by its
# own pid. Prints the tables; raw numbers go to bench/results.json, tables to
# bench/tables.md, profiles to bench/profile-*.{svg,collapsed.txt}.
#
#   bench/run.sh                       # everything, about 7 minutes
#   bench/run.sh --only agenda --only redis
#   BENCH_DURATION=8 bench/run.sh      # longer measurements (seconds, default 4)
#   BENCH_CODE=worktree bench/run.sh   # bench the working tree, not HEAD
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

log() { echo "[run.sh] $*" >&2; }

apt_install() {  # packages...; never starts their system services
  local guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard"
  fi
  local rc=0
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; } \
    >/tmp/agenda-bench-apt.log 2>&1 || rc=$?
  [ -n "$guard" ] && rm -f "$guard"
  return $rc
}

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  log "installing redis-server (apt)"
  apt_install redis-server redis-tools || { log "redis install failed:"; tail -5 /tmp/agenda-bench-apt.log >&2; }
fi
if ! command -v etcd >/dev/null; then
  log "installing etcd-server (apt)"
  if ! apt_install etcd-server; then
    log "etcd install failed (see /tmp/agenda-bench-apt.log):"
    tail -5 /tmp/agenda-bench-apt.log >&2
  fi
fi
if ! command -v py-spy >/dev/null; then
  log "installing py-spy (pip)"; "$PY" -m pip install -q py-spy || true
fi
"$PY" -c "import grpc" 2>/dev/null || { log "installing grpcio (pip)"; "$PY" -m pip install -q grpcio || true; }
# The node's own dependencies (normally already there: pip install .)
"$PY" - <<'PYEOF' || "$PY" -m pip install -q twisted attrs phonenumbers
import importlib, sys
for m in ("twisted", "attrs", "phonenumbers"):
    importlib.import_module(m)
PYEOF

exec "$PY" bench/run.py "$@"
