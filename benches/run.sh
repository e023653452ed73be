#!/usr/bin/env bash
# Runs every benchmark scenario against Halley and its peers (Socket.IO on Node, socketioxide)
# and writes BENCHMARKS.md at the repository root. Not part of CI: a full run takes about an
# hour on the 2-core reference machine.
#
#   bash benches/run.sh                 # everything, 3 runs per figure (medians)
#   RUNS=1 QUICK=1 bash benches/run.sh  # a smoke run: small client counts, short windows
#   SCENARIOS="s1 s3" SERVERS="halley socketioxide" bash benches/run.sh
#   SCENARIOS=s6 bash benches/run.sh    # RabbitMQ → Halley's AMQP bridge (Halley only)
#   SCENARIOS=s7 bash benches/run.sh    # a cluster of 1, 2 and 3 Halley nodes (RabbitMQ)
#   HALLEY_BENCH_SERVER=<other bench_server> REPORT=0 OUT=<dir> bash benches/run.sh
#                                       # A/B: another build as "halley", BENCHMARKS.md untouched
#                                       # (python3 benches/report.py <dir> prints its tables)
#
# Each measurement starts a fresh server pinned to core 0 (`taskset -c 0`) and the load
# generator pinned to core 1; raw JSON lines go to benches/results/<stamp>/, and
# benches/report.py turns them into the tables (medians, ratios Halley/peer). S7 runs several
# nodes at once: all of them on core 0, the load generator on core 1.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

RUNS="${RUNS:-3}"
QUICK="${QUICK:-0}"
SCENARIOS="${SCENARIOS:-s1 s2 s2p s3 s4 s5 s6 s7}"
# s2p: the paced broadcast rates (per second), 1k clients.
PACED_RATES="${PACED_RATES:-100 200 400 500 1600}"
SERVERS="${SERVERS:-halley socketio socketioxide}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-$ROOT/benches/results/$STAMP}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
# s6: the broker (a local RabbitMQ, started if it is not running) and the queue Halley's bridge
# consumes; not the seed's `socket.io`, so that a run never purges a test's queue.
AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
AMQP_QUEUE="${AMQP_QUEUE:-halley-bench}"
# s7: node counts, and the broadcast rate of the fixed-rate runs (the others are at saturation).
CLUSTER_NODES="${CLUSTER_NODES:-1 2 3}"
CLUSTER_RATE="${CLUSTER_RATE:-20}"
mkdir -p "$OUT"

if [ "$QUICK" = 1 ]; then
  BIG=1000 MID=300 SMALL=20 IDLE=5 WINDOW=4
  AMQP_MESSAGES_1=5000 AMQP_MESSAGES_100=2000 AMQP_MESSAGES_1000=500
else
  BIG=10000 MID=1000 SMALL=100 IDLE="${IDLE:-30}" WINDOW="${WINDOW:-10}"
  # About 5 s each on the reference machine (≈10k, 3.5k and 900 messages/s).
  AMQP_MESSAGES_1=50000 AMQP_MESSAGES_100=20000 AMQP_MESSAGES_1000=5000
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
if [[ " $SCENARIOS " == *" s6 "* || " $SCENARIOS " == *" s7 "* ]]; then
  cargo build --release --quiet --bin halley
fi
(cd benches/loadgen && cargo build --release --quiet)
if [[ " $SERVERS " == *" socketioxide "* ]]; then
  (cd benches/peers/socketioxide && cargo build --release --quiet)
fi
if [[ " $SERVERS " == *" socketio "* ]]; then
  (cd benches/peers/socketio-node && npm ci --silent --no-audit --no-fund)
fi
LOADGEN="$ROOT/benches/loadgen/target/release/halley-loadgen"

# s6 and s7 need RabbitMQ: installed if missing, started if not running (and left running, as
# tests/run-all.sh does), then waited for: `ping` answers while the node still boots, the AMQP
# listener comes up last.
rabbitmq_up() {
  rabbitmq-diagnostics -q ping -t 5 >/dev/null 2>&1 &&
    rabbitmq-diagnostics -q check_running -t 5 >/dev/null 2>&1 &&
    rabbitmq-diagnostics -q check_port_connectivity -t 5 >/dev/null 2>&1
}
if [[ " $SCENARIOS " == *" s6 "* || " $SCENARIOS " == *" s7 "* ]]; then
  if ! need rabbitmq-server; then
    log "installing rabbitmq-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if ! rabbitmq-diagnostics -q ping -t 5 >/dev/null 2>&1; then
    log "starting rabbitmq-server -detached"
    rabbitmq-server -detached || true
  fi
  deadline=$((SECONDS + 90))
  until rabbitmq_up; do
    if [ "$SECONDS" -ge "$deadline" ]; then log "RabbitMQ not up after 90 s"; exit 1; fi
    sleep 1
  done
fi

server_cmd() {
  case "$1" in
    halley) echo "${HALLEY_BENCH_SERVER:-$ROOT/target/release/examples/bench_server}" ;;
    # The real binary with its AMQP bridge on (port 0: it prints the one it got).
    halley-amqp) echo "$ROOT/target/release/halley --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --demo false --amqp-url $AMQP_URL --amqp-queue $AMQP_QUEUE --max-sessions-per-ip 1000000" ;;
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
  local name="$1" log_file="$OUT/$1.server.log"
  # shellcheck disable=SC2046
  PORT=0 HALLEY_LOG=warn taskset -c "$SERVER_CPU" $(server_cmd "$name") >"$log_file" 2>&1 &
  SERVER_PID=$!
  URL="$(server_address "$SERVER_PID" "$log_file")" ||
    { log "$name did not start:"; cat "$log_file" >&2; exit 1; }
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  stop_pids "$SERVER_PID"
  SERVER_PID=""
}

# A cluster of `halley --cluster` nodes sharing one fresh exchange, all pinned to the server core.
CLUSTER_PIDS=()
CLUSTER_URLS=""
CLUSTER_ADMINS=""
# members <admin url>: how many other nodes its /healthz lists (-1 when it does not answer).
members() {
  python3 -c 'import json, sys, urllib.request
print(len(json.load(urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=2))["cluster"]["members"]))' \
    "$1" 2>/dev/null || echo -1
}
# start_cluster <nodes> <exchange> <log prefix>: starts the nodes and waits until each lists all
# the others; returns 1 (nodes left running for stop_cluster) when that does not happen in 30 s.
start_cluster() {
  local n="$1" exchange="$2" prefix="$3" i log url admin deadline
  CLUSTER_PIDS=() CLUSTER_URLS="" CLUSTER_ADMINS=""
  # The nodes' shared secret, fresh per cluster; through the environment, not argv.
  local secret
  secret="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  for i in $(seq 1 "$n"); do
    HALLEY_CLUSTER_SECRET="$secret" HALLEY_LOG=warn taskset -c "$SERVER_CPU" "$ROOT/target/release/halley" --listen 127.0.0.1:0 \
      --admin-listen 127.0.0.1:0 \
      --demo false --amqp-url "$AMQP_URL" --cluster --node-name "$(printf 'node%02d' "$i")" \
      --cluster-exchange "$exchange" --max-sessions-per-ip 1000000 >"$prefix.node$i.log" 2>&1 &
    CLUSTER_PIDS+=("$!")
  done
  for i in $(seq 1 "$n"); do
    log="$prefix.node$i.log"
    url="$(server_address "${CLUSTER_PIDS[$((i - 1))]}" "$log")" ||
      { log "cluster node $i did not start:"; cat "$log" >&2; return 1; }
    admin="$(server_address "${CLUSTER_PIDS[$((i - 1))]}" "$log" admin)" ||
      { log "cluster node $i printed no admin address:"; cat "$log" >&2; return 1; }
    CLUSTER_URLS="${CLUSTER_URLS:+$CLUSTER_URLS,}$url"
    CLUSTER_ADMINS="${CLUSTER_ADMINS:+$CLUSTER_ADMINS,}$admin"
  done
  deadline=$((SECONDS + 30))
  for admin in ${CLUSTER_ADMINS//,/ }; do
    until [ "$(members "$admin")" = $((n - 1)) ]; do
      if [ "$SECONDS" -ge "$deadline" ]; then log "cluster did not form: $admin"; return 1; fi
      sleep 0.2
    done
  done
}

stop_cluster() {
  [ "${#CLUSTER_PIDS[@]}" -eq 0 ] || stop_pids "${CLUSTER_PIDS[@]}"
  CLUSTER_PIDS=()
}
trap 'stop_server; stop_cluster' EXIT

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

# measure_amqp <label> <run> <loadgen args...>: `amqp` against a fresh halley-amqp; the results
# file names the server `halley`.
measure_amqp() {
  local label="$1" run="$2"; shift 2
  local file="$OUT/$label.halley.$run.json"
  start_server halley-amqp
  log "$label halley run $run: $*"
  if ! taskset -c "$LOAD_CPU" "$LOADGEN" amqp "$@" --amqp-url "$AMQP_URL" --queue "$AMQP_QUEUE" \
      --url "$URL" --pid "$SERVER_PID" --sources "$(sources)" \
      >"$file" 2>"$OUT/$label.halley.$run.err"; then
    log "$label halley run $run failed (kept its output in $file)"
  fi
  stop_server
}

# measure_ceiling <run> <loadgen args...>: `amqp-ceiling` (no server; a lapin consumer in the
# load generator), results under the server name `ceiling`.
measure_ceiling() {
  local run="$1"; shift
  local file="$OUT/s6-amqp-ceiling.ceiling.$run.json"
  log "s6-amqp-ceiling run $run: $*"
  if ! taskset -c "$LOAD_CPU" "$LOADGEN" amqp-ceiling "$@" --amqp-url "$AMQP_URL" \
      --queue "$AMQP_QUEUE" >"$file" 2>"$OUT/s6-amqp-ceiling.ceiling.$run.err"; then
    log "s6-amqp-ceiling run $run failed (kept its output in $file)"
  fi
}

# measure_cluster <label> <nodes> <run> <loadgen args...>: the load generator against a fresh
# cluster (receivers round-robin over the nodes, RSS and CPU summed over them); results under the
# server name `halley-cluster`. The cluster's exchange is deleted afterwards.
measure_cluster() {
  local label="$1" nodes="$2" run="$3"; shift 3
  local prefix="$OUT/$label.halley-cluster.$run"
  local exchange="halley.bench.$STAMP.$label.$run"
  if ! start_cluster "$nodes" "$exchange" "$prefix"; then
    echo '{"error": "the cluster did not form (see the node logs)"}' >"$prefix.json"
  else
    log "$label halley-cluster run $run: $*"
    # /publish is served on the admin listener only.
    if ! taskset -c "$LOAD_CPU" "$LOADGEN" "$@" --url "$CLUSTER_URLS" --publish-url "${CLUSTER_ADMINS%%,*}" \
        --pid "$(IFS=,; echo "${CLUSTER_PIDS[*]}")" --sources "$(sources)" \
        >"$prefix.json" 2>"$prefix.err"; then
      log "$label halley-cluster run $run failed (kept its output in $prefix.json)"
    fi
  fi
  stop_cluster
  "$LOADGEN" amqp-delete-exchange --amqp-url "$AMQP_URL" --exchange "$exchange" >/dev/null 2>&1 ||
    log "could not delete the exchange $exchange"
}

# Through a temporary file: report.py keeps BENCHMARKS.md's Soak section when it finds no soak
# result (benches/soak.sh writes those).
write_report() {
  if [ "${REPORT:-1}" = 0 ]; then log "results in $OUT (REPORT=0: BENCHMARKS.md left as it is)"; return; fi
  python3 "$ROOT/benches/report.py" "$OUT" >"$ROOT/BENCHMARKS.md.tmp"
  mv "$ROOT/BENCHMARKS.md.tmp" "$ROOT/BENCHMARKS.md"
  log "wrote BENCHMARKS.md"
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
      s2p)
        # Paced fan-out: one broadcast every 1/rate s to MID clients, the shape of real feeds
        # (no closed loop to batch frames per write); 1600/s is about four times capacity.
        for server in $SERVERS; do
          for r in $PACED_RATES; do
            measure "s2p-$r-$MID" "$server" "$run" s2 --clients "$MID" --rate "$r" --duration "$WINDOW"
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
          for t in websocket polling sse xhr-streaming iframe jsonp; do
            measure "s5-idle-$t-$MID" halley "$run" s1 --transport "$t" --clients "$MID" --duration 5
            measure "s5-saturation-$t-$MID" halley "$run" s2 --transport "$t" --clients "$MID" --rate 0 --duration "$WINDOW"
          done
        fi ;;
      s6)
        # Halley only: RabbitMQ → the AMQP bridge → 1, 100 and 1,000 WebSocket clients, messages
        # published as fast as the broker confirms them; the ceiling is a plain lapin consumer.
        if [[ " $SERVERS " == *" halley "* ]]; then
          measure_amqp "s6-amqp-1" "$run" --clients 1 --messages "$AMQP_MESSAGES_1"
          measure_amqp "s6-amqp-100" "$run" --clients 100 --messages "$AMQP_MESSAGES_100"
          measure_amqp "s6-amqp-1000" "$run" --clients 1000 --messages "$AMQP_MESSAGES_1000"
          measure_ceiling "$run" --messages "$AMQP_MESSAGES_1"
        fi ;;
      s7)
        # Halley only: the `halley` binary as a cluster of 1, 2 and 3 nodes meeting on RabbitMQ;
        # receivers spread over the nodes, broadcasts POSTed to /publish of the first node's admin
        # listener.
        if [[ " $SERVERS " == *" halley "* ]]; then
          for nodes in $CLUSTER_NODES; do
            measure_cluster "s7-nodes$nodes-rate$CLUSTER_RATE" "$nodes" "$run" s2 --publish-via http \
              --clients "$MID" --rate "$CLUSTER_RATE" --duration "$WINDOW"
            measure_cluster "s7-nodes$nodes-saturation" "$nodes" "$run" s2 --publish-via http \
              --clients "$MID" --rate 0 --duration "$WINDOW"
          done
        fi ;;
      *) log "unknown scenario $scenario"; exit 2 ;;
    esac
  done
  # After every round, so an interrupted run still leaves its medians so far.
  write_report
done

log "results in $OUT"
