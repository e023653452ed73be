#!/usr/bin/env bash
# Paced broadcasts beyond capacity: what each client sees and what the server counts.
# Halley only (the peers have no counters to reconcile with): the bench server on core 0, the
# load generator on core 1, 1,000 WebSocket clients, one broadcast every 1/rate s for 10 s, then
# up to DRAIN seconds for what is still queued. After each run the server's /metrics is read:
# every delivery the clients did not get must be a packet counted as dropped or a message queued
# for a client counted as disconnected (`halley_session_closes_total{reason="outbox full"}`).
#
#   bash benches/overload.sh                  # rates 1600 3200 6400, 3 runs each
#   RATES="3200" RUNS=1 bash benches/overload.sh
#
# Prints one JSON line per run (also kept in benches/results/overload-<stamp>/), then a table of
# medians.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
RATES="${RATES:-1600 3200 6400}"
RUNS="${RUNS:-3}"
CLIENTS="${CLIENTS:-1000}"
DURATION="${DURATION:-10}"
DRAIN="${DRAIN:-30}"
SERVER="${HALLEY_BENCH_SERVER:-$ROOT/target/release/examples/bench_server}"
LOADGEN="$ROOT/benches/loadgen/target/release/halley-loadgen"
OUT="${OUT:-$ROOT/benches/results/overload-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
[ -x "$SERVER" ] || cargo build --release --example bench_server --quiet
[ -x "$LOADGEN" ] || (cd benches/loadgen && cargo build --release --quiet)

metric() { # metric <metrics text file> <line prefix>: the sample's value, 0 when absent
  awk -v p="$2" 'index($0, p) == 1 { v = $NF } END { print v + 0 }' "$1"
}

run_no=0
for rate in $RATES; do
  for run in $(seq 1 "$RUNS"); do
    run_no=$((run_no + 1))
    log="$OUT/server.$rate.$run.log"
    PORT=0 HALLEY_LOG=warn taskset -c 0 "$SERVER" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.1; done
    url=$(grep -o 'http://[0-9.:]*' "$log" | head -1)
    a=$(( (run_no % 250) + 1 ))
    taskset -c 1 "$LOADGEN" s2 --clients "$CLIENTS" --rate "$rate" --duration "$DURATION" \
      --drain "$DRAIN" --url "$url" --pid "$pid" \
      --sources "127.$a.11.1,127.$a.12.1,127.$a.13.1,127.$a.14.1" \
      >"$OUT/s2.$rate.$run.json" 2>"$OUT/s2.$rate.$run.err" || true
    curl -sf "$url/metrics" >"$OUT/metrics.$rate.$run.txt" || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    python3 - "$OUT/s2.$rate.$run.json" "$OUT/metrics.$rate.$run.txt" "$rate" "$run" <<'EOF'
import json, re, sys
run = json.load(open(sys.argv[1]))
metrics = open(sys.argv[2]).read()
def sample(prefix):
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0
line = {
    "rate": int(sys.argv[3]), "run": int(sys.argv[4]),
    "sent": run.get("broadcasts_sent"), "expected": run.get("expected"),
    "delivered": run.get("delivered"), "lost": run.get("lost"),
    "clients_dropped": run.get("dropped"),
    "closed_outbox_full": sample('halley_session_closes_total{reason="outbox full"}'),
    "closed_ping_timeout": sample('halley_session_closes_total{reason="ping timeout"}'),
    "outbox_dropped": sample("halley_outbox_dropped_total"),
    "p50_ms": run.get("latency", {}).get("p50_ms"), "p99_ms": run.get("latency", {}).get("p99_ms"),
    "max_ms": run.get("latency", {}).get("max_ms"),
    "broadcasts_handled": round(run.get("delivered", 0) / max(run.get("receivers", 1), 1)),
    "deliveries_per_s": run.get("deliveries_per_s"), "server_cpu_s_per_s": run.get("server_cpu_s_per_s"),
    "rss_start_kib": run.get("server_rss_start_kib"), "rss_end_kib": run.get("server_rss_end_kib"),
}
print(json.dumps(line))
EOF
  done
done | tee "$OUT/summary.jsonl"

python3 - "$OUT/summary.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\n| rate/s | runs | delivered | not delivered | closed: outbox full (per run) "
      "| closed: ping timeout (per run) | packets dropped | deliveries/s | p50 ms | p99 ms | max ms "
      "| RSS start → end MB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for rate in sorted({r["rate"] for r in rows}):
    rs = [r for r in rows if r["rate"] == rate]
    med = lambda k: statistics.median([r.get(k) or 0 for r in rs])
    each = lambda k: ", ".join(f"{r.get(k) or 0:,.0f}" for r in rs)
    print(f"| {rate} | {len(rs)} | {med('delivered'):,.0f} of {med('expected'):,.0f} | {med('lost'):,.0f} "
          f"| {each('closed_outbox_full')} | {each('closed_ping_timeout')} | {med('outbox_dropped'):,.0f} "
          f"| {med('deliveries_per_s'):,.0f} | {med('p50_ms'):,.0f} | {med('p99_ms'):,.0f} | {med('max_ms'):,.0f} "
          f"| {med('rss_start_kib')/1024:.1f} → {med('rss_end_kib')/1024:.1f} |")
EOF
