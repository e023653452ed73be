#!/usr/bin/env bash
# Forwarding across nodes (BENCHMARKS.md, "Forwarding across nodes"): two `halley --cluster`
# nodes, A and B, on one RabbitMQ. FWD_CLIENTS long-polling clients open their sessions on A,
# then send every later request to B (`halley-loadgen --poll-via`), which forwards each one to
# A; A's admin `POST /publish` broadcasts FWD_RATE messages a second, so every message answers
# each client's parked GET and the client sends the next. Measured over the broadcasting window:
# B's CPU, requests/s, publish → delivery latency, and the TCP connections B opened to A
# (`halley_forward_connections_total`, from binaries that export it).
#
#   bash benches/forward.sh                          # ./target/release/halley, 3 runs
#   bash benches/forward.sh /tmp/old/halley ./target/release/halley   # before vs after
#
# Several binaries are measured in turn within each run (so drift hits them alike); the summary
# gives each one's medians over FWD_RUNS runs and the ratio of each to the first. Both nodes
# are pinned to core 0, the load generator to core 1. Environment: FWD_CLIENTS (200), FWD_RATE
# (10 messages/s), FWD_DURATION (10 s), FWD_RUNS (3), AMQP_URL, LG (the load generator,
# built if missing). Raw JSON lines and node logs go to benches/results/forward-<stamp>/.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

CLIENTS="${FWD_CLIENTS:-200}"
RATE="${FWD_RATE:-10}"
DURATION="${FWD_DURATION:-10}"
RUNS="${FWD_RUNS:-3}"
AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-$ROOT/benches/results/forward-$STAMP}"
LG="${LG:-$ROOT/benches/loadgen/target/release/halley-loadgen}"
BINS=("$@")
[ "${#BINS[@]}" -gt 0 ] || BINS=("$ROOT/target/release/halley")
mkdir -p "$OUT"

log() { printf '[forward %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

[ -x "$LG" ] || (cd "$ROOT/benches/loadgen" && cargo build --release --quiet)
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached
  for _ in $(seq 1 60); do rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break; sleep 1; done
fi

PIDS=()
trap '[ "${#PIDS[@]}" -eq 0 ] || stop_pids "${PIDS[@]}"' EXIT

members() {
  python3 -c 'import json, sys, urllib.request
print(len(json.load(urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=2))["cluster"]["members"]))' \
    "$1" 2>/dev/null || echo -1
}

# measure <binary> <label> <run>: one run against a fresh two-node cluster.
measure() {
  local bin="$1" label="$2" run="$3" prefix exchange secret a b a_admin b_admin admin
  prefix="$OUT/$label.$run"
  exchange="halley.bench.forward.$STAMP.$label.$run"
  secret="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  PIDS=()
  for node in fwdnda fwdndb; do
    HALLEY_CLUSTER_SECRET="$secret" HALLEY_LOG=warn taskset -c "$SERVER_CPU" "$bin" \
      --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --demo false --amqp-url "$AMQP_URL" \
      --cluster --node-name "$node" --cluster-exchange "$exchange" \
      --max-sessions-per-ip 1000000 >"$prefix.$node.log" 2>&1 &
    PIDS+=("$!")
  done
  a="$(server_address "${PIDS[0]}" "$prefix.fwdnda.log")"
  b="$(server_address "${PIDS[1]}" "$prefix.fwdndb.log")"
  a_admin="$(server_address "${PIDS[0]}" "$prefix.fwdnda.log" admin)"
  b_admin="$(server_address "${PIDS[1]}" "$prefix.fwdndb.log" admin)"
  for admin in "$a_admin" "$b_admin"; do
    local deadline=$((SECONDS + 30))
    until [ "$(members "$admin")" = 1 ]; do
      [ "$SECONDS" -lt "$deadline" ] || { log "the cluster did not form ($admin)"; return 1; }
      sleep 0.2
    done
  done
  log "$label run $run: $CLIENTS polling clients on A ($a) through B ($b), $RATE messages/s"
  taskset -c "$LOAD_CPU" "$LG" s2 --transport polling --url "$a" --poll-via "$b" \
    --publish-via http --publish-url "$a_admin" --pid "${PIDS[1]}" \
    --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" >"$prefix.json"
  # B's forwarding connections, added to the run's JSON (null from a binary without the counter).
  python3 - "$prefix.json" "$b_admin" "$label" "$bin" <<'EOF'
import json, sys, urllib.request
path, admin, label, binary = sys.argv[1:]
metrics = urllib.request.urlopen(admin + "/metrics", timeout=5).read().decode()
opened = next((float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("halley_forward_connections_total ")), None)
with open(path) as f:
    result = json.loads(f.read().strip().splitlines()[-1])
result.update(label=label, binary=binary, forward_connections=opened)
with open(path, "w") as f:
    f.write(json.dumps(result) + "\n")
EOF
  stop_pids "${PIDS[@]}"
  PIDS=()
  "$LG" amqp-delete-exchange --amqp-url "$AMQP_URL" --exchange "$exchange" >/dev/null 2>&1 || true
}

for run in $(seq 1 "$RUNS"); do
  for k in "${!BINS[@]}"; do
    measure "${BINS[$k]}" "bin$k" "$run"
  done
done

python3 - "$OUT" "${#BINS[@]}" <<'EOF'
import glob, json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
def med(rows, get):
    values = [v for v in map(get, rows) if v is not None]
    return statistics.median(values) if values else None
summary = []
for k in range(n):
    rows = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/bin{k}.*.json"))]
    summary.append({
        "binary": rows[0]["binary"], "runs": len(rows),
        "b_cpu_s_per_s": med(rows, lambda r: r["server_cpu_s_per_s"]),
        "requests_per_s": med(rows, lambda r: r["requests_per_s"]),
        "deliveries_per_s": med(rows, lambda r: r["deliveries_per_s"]),
        "latency_p50_ms": med(rows, lambda r: r["latency"]["p50_ms"]),
        "latency_p99_ms": med(rows, lambda r: r["latency"]["p99_ms"]),
        "lost": med(rows, lambda r: r["lost"]),
        "errors": sum(r.get("connect_errors", 0) for r in rows),
        "forward_connections": med(rows, lambda r: r.get("forward_connections")),
    })
for s in summary[1:]:
    s["ratio_to_first"] = {key: round(s[key] / summary[0][key], 3)
                           for key in ("b_cpu_s_per_s", "requests_per_s", "latency_p50_ms", "latency_p99_ms")
                           if s[key] and summary[0][key]}
text = json.dumps(summary, indent=1)
open(f"{out}/summary.json", "w").write(text + "\n")
print(text)
EOF
