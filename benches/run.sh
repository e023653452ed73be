#!/usr/bin/env bash
# Runs every benchmark scenario against Halley and its peers (Socket.IO on Node, socketioxide)
# and writes BENCHMARKS.md at the repository root. Not part of CI: a full run takes about an
# hour on the 2-core reference machine.
#
#   bash benches/run.sh                 # everything, 3 runs per figure (medians)
#   RUNS=1 QUICK=1 bash benches/run.sh  # a smoke run: small client counts, short windows
#   SCENARIOS="s1 s3" SERVERS="halley socketioxide" bash benches/run.sh
#
# Each measurement starts a fresh server pinned to core 0 (`taskset -c 0`) and the load
# generator pinned to core 1; raw JSON lines go to benches/results/<stamp>/, and
# benches/report.py turns them into the tables (medians, ratios Halley/peer).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

RUNS="${RUNS:-3}"
QUICK="${QUICK:-0}"
SCENARIOS="${SCENARIOS:-s1 s2 s3 s4 s5}"
SERVERS="${SERVERS:-halley socketio socketioxide}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-$ROOT/benches/results/$STAMP}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
mkdir -p "$OUT"

if [ "$QUICK" = 1 ]; then
  BIG=1000 MID=300 SMALL=20 IDLE=5 WINDOW=4
else
  BIG=10000 MID=1000 SMALL=100 IDLE=30 WINDOW=10
fi

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- build -------------------------------------------------------------------------------
need() { command -v "$1" >/dev/null 2>&1; }
if ! need node || ! need npm; then
  log "installing nodejs and npm"
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
log "building halley bench_server, the load generator and the peers"
cargo build --release --quiet --example bench_server
(cd benches/loadgen && cargo build --release --quiet)
if [[ " $SERVERS " == *" socketioxide "* ]]; then
  (cd benches/peers/socketioxide && cargo build --release --quiet)
fi
if [[ " $SERVERS " == *" socketio "* ]]; then
  (cd benches/peers/socketio-node && npm ci --silent --no-audit --no-fund)
fi
LOADGEN="$ROOT/benches/loadgen/target/release/halley-loadgen"

server_cmd() {
  case "$1" in
    halley) echo "$ROOT/target/release/examples/bench_server" ;;
    socketio) echo "node $ROOT/benches/peers/socketio-node/server.js" ;;
    socketioxide) echo "$ROOT/benches/peers/socketioxide/target/release/socketioxide-bench-server" ;;
    *) echo "unknown server $1" >&2; exit 2 ;;
  esac
}

# Fresh loopback source addresses for every run, so that the sockets a run leaves in
# TIME_WAIT never slow the next run's connects (each address has its own ephemeral ports).
RUN_NO=0
sources() {
  RUN_NO=$((RUN_NO + 1))
  local a=$(( (RUN_NO % 250) + 1 )) list="" i
  for i in 1 2 3 4; do list="${list:+$list,}127.$a.$i.1"; done
  echo "$list"
}

SERVER_PID=""
start_server() {
  local name="$1" log_file="$OUT/$1.server.log" port_line
  # shellcheck disable=SC2046
  PORT=0 taskset -c "$SERVER_CPU" $(server_cmd "$name") >"$log_file" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    port_line="$(grep -m1 -o 'listening on http://[0-9.]*:[0-9]*' "$log_file" || true)"
    [ -n "$port_line" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { log "$name died at start:"; cat "$log_file" >&2; exit 1; }
    sleep 0.05
  done
  [ -n "$port_line" ] || { log "$name did not print its address"; exit 1; }
  URL="${port_line#listening on }"
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT

# measure <scenario label> <server> <run> <loadgen args...>
measure() {
  local label="$1" server="$2" run="$3"; shift 3
  local file="$OUT/$label.$server.$run.json"
  start_server "$server"
  log "$label $server run $run: $*"
  if ! taskset -c "$LOAD_CPU" "$LOADGEN" "$@" --url "$URL" --pid "$SERVER_PID" \
      --sources "$(sources)" >"$file" 2>"$OUT/$label.$server.$run.err"; then
    log "$label $server run $run failed (kept its output in $file)"
  fi
  stop_server
}

for run in $(seq 1 "$RUNS"); do
  for scenario in $SCENARIOS; do
    case "$scenario" in
      s1)
        for server in $SERVERS; do
          measure "s1-ws-$BIG" "$server" "$run" s1 --transport websocket --clients "$BIG" --duration "$IDLE"
          measure "s1-polling-$BIG" "$server" "$run" s1 --transport polling --clients "$BIG" --duration "$IDLE"
        done ;;
      s2)
        for server in $SERVERS; do
          for n in "$MID" "$BIG"; do
            measure "s2-rate10-$n" "$server" "$run" s2 --clients "$n" --rate 10 --duration "$WINDOW"
            measure "s2-saturation-$n" "$server" "$run" s2 --clients "$n" --rate 0 --duration "$WINDOW"
          done
        done ;;
      s3)
        for server in $SERVERS; do
          measure "s3-acks-$SMALL" "$server" "$run" s3 --clients "$SMALL" --duration "$WINDOW"
        done ;;
      s4)
        for server in $SERVERS; do
          measure "s4-polling-$MID" "$server" "$run" s2 --transport polling --clients "$MID" --rate 10 --duration "$WINDOW"
          measure "s4-polling-saturation-$MID" "$server" "$run" s2 --transport polling --clients "$MID" --rate 0 --duration "$WINDOW"
        done ;;
      s5)
        # Halley only: its streaming and legacy transports against its own WebSocket path.
        if [[ " $SERVERS " == *" halley "* ]]; then
          for t in websocket sse xhr-streaming iframe jsonp; do
            measure "s5-idle-$t-$MID" halley "$run" s1 --transport "$t" --clients "$MID" --duration 5
            measure "s5-saturation-$t-$MID" halley "$run" s2 --transport "$t" --clients "$MID" --rate 0 --duration "$WINDOW"
          done
        fi ;;
      *) log "unknown scenario $scenario"; exit 2 ;;
    esac
  done
done

log "results in $OUT"
python3 "$ROOT/benches/report.py" "$OUT" >"$ROOT/BENCHMARKS.md"
log "wrote BENCHMARKS.md"
