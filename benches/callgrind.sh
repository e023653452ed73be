#!/usr/bin/env bash
# User-space instructions per WebSocket delivery, counted by valgrind's callgrind: a measure of
# the server's own work that does not depend on the machine's noise, its kernel or hardware
# counters (a VM often has none: `perf stat -e instructions` says "not supported").
#
#   bash benches/callgrind.sh [server command...]
#
# Without a command: Halley's bench_server. Peers: benches/peers/socketioxide/target/release/
# socketioxide-bench-server (the same app). CLIENTS (200) WebSocket clients receive RATE (50)
# broadcasts a second; once they are connected the counters are zeroed, and WINDOW (5) seconds
# later dumped: Ir per delivery = instructions / (RATE x CLIENTS x WINDOW). At the default rate
# every delivery is a write of its own (the broadcasts are further apart than the write hold).
# Prints one line: the server, its instructions in the window, per delivery, and the load
# generator's deliveries/s and losses (a server that fell behind makes the figure meaningless).
# Needs valgrind (`apt-get install valgrind`) and the load generator (benches/README.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
RATE="${RATE:-50}"
CLIENTS="${CLIENTS:-200}"
WINDOW="${WINDOW:-5}"
LOADGEN="$ROOT/benches/loadgen/target/release/halley-loadgen"
if [ "$#" -eq 0 ]; then
  set -- "$ROOT/target/release/examples/bench_server"
fi
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
[ -x "$LOADGEN" ] || { echo "build the load generator first (benches/README.md)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
PORT=0 HALLEY_LOG=warn taskset -c 0 valgrind --tool=callgrind \
  --callgrind-out-file="$work/out.%p" "$@" >"$work/server.log" 2>"$work/valgrind.log" &
server=$!
# Under valgrind the server starts slowly: wait up to six of server_address's 10 s rounds.
url=""
for _ in 1 2 3 4 5 6; do
  url="$(server_address "$server" "$work/server.log")" && break
  kill -0 "$server" 2>/dev/null || { cat "$work/valgrind.log" >&2; exit 1; }
done
[ -n "$url" ] || { echo "the server did not start within 60 s" >&2; exit 1; }
# Connecting, then the window, then a margin: the load must still run when the counters dump.
duration=$((WINDOW + 9))
taskset -c 1 "$LOADGEN" s2 --clients "$CLIENTS" --rate "$RATE" --duration "$duration" \
  --url "$url" --sources 127.0.1.1 >"$work/load.json" 2>"$work/load.err" &
load=$!
# The load generator connects every client, then says it starts broadcasting (stderr).
for _ in $(seq 1 600); do
  grep -q "broadcasting" "$work/load.err" 2>/dev/null && break
  sleep 0.1
done
sleep 1
callgrind_control -z "$server" >/dev/null 2>&1
sleep "$WINDOW"
callgrind_control -d "$server" >/dev/null 2>&1
wait "$load"
stop_pids "$server"
dump="$(ls "$work"/out.*.1)"
instructions="$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")"
python3 - "$instructions" "$RATE" "$CLIENTS" "$WINDOW" "$work/load.json" "$1" <<'EOF'
import json, os, sys
ir, rate, clients, window, load, server = sys.argv[1:]
ir = int(ir)
deliveries = int(rate) * int(clients) * int(window)
run = json.load(open(load))
print(f"{os.path.basename(server)}: {ir:,} instructions in {window} s, "
      f"{ir / deliveries:,.0f} per delivery; {run['deliveries_per_s']:,.0f} deliveries/s, "
      f"lost {run['lost']}")
EOF
