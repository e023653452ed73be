#!/usr/bin/env bash
# Runs Halley's cargo-fuzz targets, each for a bounded time, over a working copy of the seed
# corpus. Exits non-zero if any target crashed (or the build failed) and prints each crash input.
# Ends with one line: "fuzz: N passed, N failed" (one per target).
#
#   bash tests/fuzz/run.sh                       # every target, 300 s each, AddressSanitizer
#   bash tests/fuzz/run.sh 60 query sio_packet   # 60 s each, only these targets
#   bash tests/fuzz/run.sh --sanitizer none 20   # what tests/run-all.sh runs
#   bash tests/fuzz/run.sh --save-corpus 600     # also merge new coverage into fixtures/fuzz/
#
# Environment: FUZZ_SANITIZER (address | none, as --sanitizer), FUZZ_MAX_LEN (default 4096),
# FUZZ_ARGS (extra libFuzzer options, e.g. "-jobs=2 -workers=2").
#
# Toolchain: `-s none` needs nothing unstable and builds on plain stable. A sanitizer needs
# `-Zsanitizer`, so it is built on the default (stable) toolchain with RUSTC_BOOTSTRAP=1 (the
# sanitizer runtimes ship with stable's rust-std), and on `+nightly` if that fails and a nightly
# toolchain is installed.
set -uo pipefail
cd "$(dirname "$0")/../.."
fuzz_dir=tests/fuzz
all_targets=(eio_payload sio_packet http_body query http1)

seconds=300
sanitizer="${FUZZ_SANITIZER:-address}"
save_corpus=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --save-corpus) save_corpus=1 ;;
    --sanitizer) sanitizer="$2"; shift ;;
    --sanitizer=*) sanitizer="${1#*=}" ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    [0-9]*) seconds="$1" ;;
    *)
      if [[ " ${all_targets[*]} " == *" $1 "* ]]; then targets+=("$1"); else
        echo "unknown target or option: $1 (targets: ${all_targets[*]})" >&2; exit 2
      fi ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
max_len="${FUZZ_MAX_LEN:-4096}"
read -r -a extra_args <<<"${FUZZ_ARGS:-}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "=== cargo install cargo-fuzz --locked"
  cargo install cargo-fuzz --locked --quiet || { echo "fuzz: 0 passed, ${#targets[@]} failed"; exit 1; }
fi

# --- Build (every target at once) ----------------------------------------------------------
toolchain=()
if [ "$sanitizer" != none ]; then export RUSTC_BOOTSTRAP=1; fi
build_all() {
  # `cargo fuzz build` takes one target or all; build all unless only one was asked for.
  if [ ${#targets[@]} -eq 1 ]; then
    cargo "${toolchain[@]}" fuzz build --fuzz-dir "$fuzz_dir" -s "$sanitizer" "${targets[0]}"
  else
    cargo "${toolchain[@]}" fuzz build --fuzz-dir "$fuzz_dir" -s "$sanitizer"
  fi
}
echo "=== cargo fuzz build -s $sanitizer (${RUSTC_BOOTSTRAP:+RUSTC_BOOTSTRAP=1, }$(rustc --version))"
if ! build_all; then
  if [ "$sanitizer" != none ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "=== stable + RUSTC_BOOTSTRAP failed; retrying on +nightly"
    unset RUSTC_BOOTSTRAP
    toolchain=(+nightly)
    build_all || { echo "fuzz: 0 passed, ${#targets[@]} failed"; exit 1; }
  else
    echo "fuzz: 0 passed, ${#targets[@]} failed"
    exit 1
  fi
fi

# --- Run -----------------------------------------------------------------------------------
passed=0
failed=0
log_dir="$fuzz_dir/logs"
mkdir -p "$log_dir"
for target in "${targets[@]}"; do
  seeds="fixtures/fuzz/$target"
  corpus="$fuzz_dir/corpus/$target"       # working copy: new entries go here, never to fixtures/
  artifacts="$fuzz_dir/artifacts/$target"
  log="$log_dir/$target.log"
  mkdir -p "$corpus" "$artifacts"
  marker=$(mktemp)
  echo "=== $target: ${seconds} s"
  # libFuzzer writes new inputs to the first corpus directory only; the seeds are read.
  cargo "${toolchain[@]}" fuzz run --fuzz-dir "$fuzz_dir" -s "$sanitizer" "$target" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -print_final_stats=1 \
    -dict="$fuzz_dir/dicts/$target.dict" "${extra_args[@]}" >"$log" 2>&1
  rc=$?
  crashes=$(find "$artifacts" -type f -newer "$marker" ! -name 'slow-unit-*' 2>/dev/null | sort)
  rm -f "$marker"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\)\/\([^ ]*\).*/cov \1, ft \2, corpus \3 (\4)/p' <<<"$last")
  if [ "$rc" -eq 0 ] && [ -z "$crashes" ]; then
    passed=$((passed + 1))
    echo "ok: $target: ${runs:-?} runs, ${speed:-?} exec/s, ${cov:-no coverage line}"
  else
    failed=$((failed + 1))
    echo "FAILED: $target (exit $rc): ${runs:-?} runs, ${cov:-no coverage line}; log: $log"
    # The panic message (or the sanitizer's report), without the backtrace: that is in the log.
    grep -E -A3 "panicked at|==[0-9]+== ?ERROR|^SUMMARY" "$log" | grep -v -E "^ *(stack backtrace|[0-9]+:|at )" | head -30
    for crash in $crashes; do
      echo "crash input: $crash"
      echo "  reproduce: cargo fuzz run --fuzz-dir $fuzz_dir -s $sanitizer $target $crash"
    done
    [ -n "$crashes" ] || tail -20 "$log"
  fi
  if [ "$save_corpus" = 1 ]; then
    echo "=== $target: merging new coverage into $seeds"
    cargo "${toolchain[@]}" fuzz run --fuzz-dir "$fuzz_dir" -s "$sanitizer" "$target" "$seeds" "$corpus" -- \
      -merge=1 -max_len="$max_len" >>"$log" 2>&1 ||
      echo "merge failed; see $log"
  fi
done

echo
echo "fuzz: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
