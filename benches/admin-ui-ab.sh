#!/bin/bash
# The Admin UI's CPU per delivery (BENCHMARKS.md, "Admin UI"): RUNS interleaved rounds of S2 at
# saturation against A = bench_server, B = bench_admin_ui with nobody watching, C = bench_admin_ui
# with a UI connected (benches/admin-ui.mjs --hold); server on core 0, load generator on core 1;
# the loader's JSON and `perf stat` task-clock per run in $OUT. Needs the examples and the loader built
# (benches/README.md) and tests/interop's npm ci (for ws).
cd "$(git rev-parse --show-toplevel)"
LG=benches/loadgen/target/release/halley-loadgen
OUT=${OUT:-benches/results/admin-ui-ab-$(date -u +%Y%m%dT%H%M%SZ)}; mkdir -p $OUT
RUNS=${RUNS:-5}
for i in $(seq 1 $RUNS); do
  for cfg in A B C; do
    bin=./target/release/examples/bench_admin_ui; [ $cfg = A ] && bin=./target/release/examples/bench_server
    PORT=18093 taskset -c 0 $bin > /dev/null 2>&1 & S=$!
    sleep 0.5
    H=
    if [ $cfg = C ]; then node benches/admin-ui.mjs http://127.0.0.1:18093 --hold > /dev/null 2>&1 & H=$!; sleep 0.5; fi
    perf stat -x, -e instructions:u,instructions:k,task-clock -p $S -o $OUT/perf-$cfg-$i.txt & P=$!
    taskset -c 1 $LG s2 --url http://127.0.0.1:18093 --clients 1000 --rate 0 --duration 8 --pid $S --sources 127.0.0.1,127.0.0.2 > $OUT/s2-$cfg-$i.json 2>/dev/null
    kill -INT $P; wait $P 2>/dev/null
    [ -n "$H" ] && kill $H
    kill $S; while kill -0 $S 2>/dev/null; do sleep 0.2; done
  done
done
echo done
