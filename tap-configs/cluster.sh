#!/usr/bin/env bash
# The seed's three-node local cluster on 127.0.0.1:
#   node   client port   sync port   data          pid / log
#   a1     9010          9005        data/a1       run/a1.pid, run/a1.log
#   a2     9011          9006        data/a2       run/a2.pid, run/a2.log
#   a3     9012          9007        data/a3       run/a3.pid, run/a3.log
# Usage: tap-configs/cluster.sh start|stop|status  (run from the project folder)
set -euo pipefail
cd "$(dirname "$0")/.."
TWISTD=${TWISTD:-twistd}
mkdir -p run data

node() {  # name client-port sync-port peers
  echo "$1 $2 $3 $4"
}
nodes() {
  node a1 9010 9005 127.0.0.1:9006,127.0.0.1:9007
  node a2 9011 9006 127.0.0.1:9005,127.0.0.1:9007
  node a3 9012 9007 127.0.0.1:9005,127.0.0.1:9006
}

running() { [ -f "run/$1.pid" ] && kill -0 "$(cat "run/$1.pid")" 2>/dev/null; }

case "${1:-start}" in
start)
  nodes | while read -r name port sync peers; do
    if running "$name"; then echo "$name already running (pid $(cat "run/$name.pid"))"; continue; fi
    "$TWISTD" --pidfile "run/$name.pid" --logfile "run/$name.log" \
      agenda --port "$port" --sync-port "$sync" --peers "$peers" \
      --data-dir "data/$name" --node-id "$name"
    echo "$name: clients on 127.0.0.1:$port, peers on :$sync (log run/$name.log)"
  done
  echo "try: nc 127.0.0.1 9010   (then type HELP)"
  ;;
stop)
  nodes | while read -r name _; do
    if running "$name"; then kill "$(cat "run/$name.pid")" && echo "$name stopped"; fi
  done
  ;;
status)
  nodes | while read -r name port _; do
    if running "$name"; then echo "$name up (pid $(cat "run/$name.pid"), port $port)"
    else echo "$name down"; fi
  done
  ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
