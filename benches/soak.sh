#!/usr/bin/env bash
# Soak (reliability): a population of clients on mixed transports joining and leaving for a long
# time under broadcasts, against the bench app (examples/bench_server). Passes when connected
# clients lost no message, the server's RSS after everyone left is within 10 % of the warmed-up
# baseline, no client saw an error, and the server log has no ERROR/WARN line.
#
#   bash benches/soak.sh [minutes]            # default 10 minutes of churn, 5,000 clients
#   SOAK_CLIENTS=1000 bash benches/soak.sh 1  # a short check
#
# Environment: SOAK_CLIENTS (5000), SOAK_RATE (broadcasts/s, 10), SOAK_MIX (transport weights,
# the load generator's default when empty), SOAK_LIFE_MIN / SOAK_LIFE_MAX (5 / 60 s),
# SOAK_DROP (fraction of clients that just close their connections, 0.2), SOAK_REAP (seconds
# after everyone left before reading RSS, 70: the heartbeat (pingInterval + pingTimeout, 45 s)
# reaps the sessions of clients that just dropped, then the memory trimmer passes (every 10 s)),
# SOAK_WARMUP_CHURN (seconds of the same churn before the baseline, everyone leaving at its end,
# 120: the baseline is the memory of a server that has served this workload, its maps and
# allocator grown to it; 0 warms up with one burst instead: everyone connects, stays 10 s,
# leaves), SOAK_LOG (the server's RUST_LOG, info),
# SOAK_LOG_ALLOW (a Python regex: ERROR/WARN lines matching it are not counted), SOAK_ARGS
# (more load generator arguments), SERVER_CPU (0), LOAD_CPU (1).
#
# Writes benches/results/soak-<stamp>.json (the load generator's result plus `server_log`,
# `checks` and `pass`), keeps the server log and the load generator's progress next to it, and
# rewrites the Soak section of BENCHMARKS.md (benches/report.py --update-soak). Exits 1 when
# the soak did not pass.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

MINUTES="${1:-10}"
CLIENTS="${SOAK_CLIENTS:-5000}"
RATE="${SOAK_RATE:-10}"
LIFE_MIN="${SOAK_LIFE_MIN:-5}"
LIFE_MAX="${SOAK_LIFE_MAX:-60}"
DROP="${SOAK_DROP:-0.2}"
REAP="${SOAK_REAP:-70}"
WARMUP_CHURN="${SOAK_WARMUP_CHURN:-120}"
SERVER_LOG_LEVEL="${SOAK_LOG:-info}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
DURATION="$(python3 -c 'import sys; print(round(float(sys.argv[1]) * 60, 3))' "$MINUTES")"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p benches/results
BASE="$ROOT/benches/results/soak-$STAMP"
RESULT="$BASE.json"
SERVER_LOG="$BASE.server.log"
PROGRESS="$BASE.loadgen.log"

log() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

log "building the bench app and the load generator"
cargo build --release --quiet --example bench_server
(cd benches/loadgen && cargo build --release --quiet)
LOADGEN="$ROOT/benches/loadgen/target/release/halley-loadgen"

SERVER_PID=""
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  stop_pids "$SERVER_PID"
  SERVER_PID=""
}
trap stop_server EXIT

RUST_LOG="$SERVER_LOG_LEVEL" PORT=0 taskset -c "$SERVER_CPU" \
  "$ROOT/target/release/examples/bench_server" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
URL="$(server_address "$SERVER_PID" "$SERVER_LOG")" ||
  { log "the server did not start:"; cat "$SERVER_LOG" >&2; exit 1; }

# Loopback source addresses of their own (each with ~28k ephemeral ports), away from run.sh's.
SOURCES="127.200.1.1,127.200.2.1,127.200.3.1,127.200.4.1"
ARGS=(soak --url "$URL" --pid "$SERVER_PID" --clients "$CLIENTS" --duration "$DURATION"
  --rate "$RATE" --life-min "$LIFE_MIN" --life-max "$LIFE_MAX" --drop-fraction "$DROP"
  --reap "$REAP" --warmup-churn "$WARMUP_CHURN" --sources "$SOURCES")
[ -n "${SOAK_MIX:-}" ] && ARGS+=(--mix "$SOAK_MIX")
# shellcheck disable=SC2206
[ -n "${SOAK_ARGS:-}" ] && ARGS+=($SOAK_ARGS)
log "server pid $SERVER_PID at $URL (core $SERVER_CPU, RUST_LOG=$SERVER_LOG_LEVEL); load on core $LOAD_CPU"
log "${ARGS[*]}"
log "progress in $PROGRESS"
status=0
taskset -c "$LOAD_CPU" "$LOADGEN" "${ARGS[@]}" >"$RESULT.raw" 2>"$PROGRESS" || status=$?
[ "$status" = 0 ] || log "the load generator exited with $status"
stop_server
trap - EXIT

# The server log's ERROR/WARN lines (ANSI colours stripped), the checks, the verdict.
python3 - "$RESULT.raw" "$SERVER_LOG" "$RESULT" "$STAMP" "${SOAK_LOG_ALLOW:-}" <<'EOF'
import json, os, re, sys

raw, server_log, result, stamp, allow = sys.argv[1:6]
text = open(raw, encoding="utf-8").read().strip()
try:
    data = json.loads(text.splitlines()[-1]) if text else {"error": "no result"}
except json.JSONDecodeError:
    data = {"error": "unreadable result: " + text[-200:]}
ansi = re.compile(r"\x1b\[[0-9;]*m")
errors, warns, lines = 0, 0, []
for line in open(server_log, encoding="utf-8", errors="replace"):
    line = ansi.sub("", line.rstrip("\n"))
    level = re.search(r"\b(ERROR|WARN)\b", line)
    panic = "panicked" in line
    if not (level or panic) or (allow and re.search(allow, line)):
        continue
    if panic or level.group(1) == "ERROR":
        errors += 1
    else:
        warns += 1
    lines.append(line)
data["stamp"] = stamp
data["server_log"] = {
    "file": os.path.relpath(server_log, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(result))))),
    "error_lines": errors,
    "warn_lines": warns,
    "lines": lines[:50],
}
checks = data.setdefault("checks", {})
checks["server_log_clean"] = errors + warns == 0
checks["completed"] = "error" not in data
data["pass"] = all(v is True for v in checks.values())
with open(result, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=1)
    f.write("\n")
os.remove(raw)
for line in lines[:50]:
    print("server log:", line, file=sys.stderr)
mem = data.get("memory", {})
print(json.dumps({
    "pass": data["pass"],
    "checks": checks,
    "clients_connected_total": data.get("clients_connected_total"),
    "broadcasts_sent": data.get("broadcasts_sent"),
    "deliveries": data.get("deliveries"),
    "lost": data.get("lost"),
    "lost_edges": data.get("lost_edges"),
    "latency": data.get("latency"),
    "errors": data.get("errors"),
    "memory": {k: mem.get(k) for k in ("rss_start_kib", "baseline_kib", "peak_kib", "final_kib", "final_vs_baseline", "final_within_10pct", "fds_start", "fds_baseline", "fds_final")},
    "error": data.get("error"),
}, indent=1))
EOF

python3 "$ROOT/benches/report.py" --update-soak "$ROOT/BENCHMARKS.md" "$RESULT"
log "result in $RESULT; Soak section of BENCHMARKS.md updated"
python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["pass"] else 1)' "$RESULT"
