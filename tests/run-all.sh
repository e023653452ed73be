#!/usr/bin/env bash
# Runs every Halley test on a fresh Debian machine: installs what is missing, builds, then runs
# the Rust tests, the Node interop tests (official engine.io-client / socket.io-client) and the
# Python interop tests (python-socketio). Ends with one line: "N passed, N failed".
#
#   bash tests/run-all.sh            # everything
#   SKIP_INSTALL=1 bash tests/run-all.sh   # do not touch apt/npm/pip (already installed)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT

step() { printf '\n=== %s\n' "$*"; }

# --- 1. Install what is missing (Debian packages, one apt-get run) ----------------------------
# Node.js + npm (interop and browser tests), Python with venv (python-socketio, pika), Chromium
# (browser tests, never a downloaded browser), RabbitMQ (AMQP bridge tests), nginx and openssl
# (TLS-terminating proxy test).
need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v rabbitmq-server >/dev/null 2>&1 || need_apt+=(rabbitmq-server)
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || need_apt+=(nginx)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# squid with its stock rules: the WebSocket-stripping forward proxy (client-proxies.test.mjs).
{ command -v squid >/dev/null 2>&1 || [ -x /usr/sbin/squid ]; } || need_apt+=(squid)
if [ "${SKIP_INSTALL:-}" != 1 ] && [ ${#need_apt[@]} -gt 0 ]; then
  step "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
CHROMIUM="${CHROMIUM:-$(command -v chromium || echo /usr/bin/chromium)}"
NGINX="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
export CHROMIUM NGINX

# RabbitMQ boots while the build runs; the interop steps wait for it (wait_rabbitmq).
if command -v rabbitmq-server >/dev/null 2>&1 && ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  step "rabbitmq-server -detached"
  rabbitmq-server -detached || true
fi
# Until the broker takes AMQP connections (cluster.test.mjs, test_amqp.py need it), at most 60 s.
wait_rabbitmq() {
  command -v rabbitmq-diagnostics >/dev/null 2>&1 || return 0
  # ping answers while the node still boots; the AMQP listener comes up last.
  local deadline=$((SECONDS + 60))
  until rabbitmq-diagnostics -q ping >/dev/null 2>&1 &&
    rabbitmq-diagnostics -q check_running >/dev/null 2>&1 &&
    rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "RabbitMQ not up after 60 s: the AMQP and cluster tests will fail"; return 0; fi
    sleep 1
  done
}

# --- 2. Build ---------------------------------------------------------------------------------
step "cargo build (release examples, for the interop tests)"
cargo build --release --examples --bins --quiet
export HALLEY_EXAMPLES="$root/target/release/examples"
export HALLEY_BIN="$root/target/release/halley"

# --- 3. Rust ----------------------------------------------------------------------------------
step "cargo fmt --check, clippy"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test --workspace"
wait_rabbitmq # tests/cluster.rs meets a real broker
cargo test --workspace 2>&1 | tee "$log_dir/cargo.log"

# Every decoder of client input under libFuzzer, briefly (longer: bash tests/fuzz/run.sh 300).
# No sanitizer, so plain stable builds it; a crash counts as a failure in the tally below.
step "fuzz: cargo-fuzz targets, ${FUZZ_SECONDS:-20} s each (tests/fuzz/run.sh)"
fuzz_rc=0
bash tests/fuzz/run.sh --sanitizer none "${FUZZ_SECONDS:-20}" 2>&1 | tee "$log_dir/fuzz.log" || fuzz_rc=$?

# --- 4. Node interop (official clients) -------------------------------------------------------
# The Python venv first: the Node tests publish to RabbitMQ through pika too
# (cluster-order.test.mjs, tests/interop/python/amqp_publisher.py).
venv="$root/target/pyvenv"
if [ -f tests/interop/python/requirements.txt ]; then
  step "python venv (python-socketio, pika)"
  if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
  if [ "${SKIP_INSTALL:-}" != 1 ]; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/python/requirements.txt
  fi
  export HALLEY_PYTHON="$venv/bin/python"
fi

step "node interop tests"
wait_rabbitmq
(
  cd tests/interop
  if [ "${SKIP_INSTALL:-}" != 1 ] || [ ! -d node_modules ]; then npm ci --no-audit --no-fund --silent; fi
  node --test --test-reporter=spec ./*.test.mjs
) 2>&1 | tee "$log_dir/node.log"

# --- 5. Python interop ------------------------------------------------------------------------
if [ -f tests/interop/python/requirements.txt ]; then
  step "python interop tests"
  wait_rabbitmq
  (cd tests/interop/python && "$venv/bin/python" -m unittest -v 2>&1) | tee "$log_dir/python.log"
fi

# --- 6. Tally ---------------------------------------------------------------------------------
passed=0
failed=0
add() { passed=$((passed + ${1:-0})); failed=$((failed + ${2:-0})); }
while read -r p f; do add "$p" "$f"; done < <(
  sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log_dir/cargo.log")
# One per fuzz target; a run that died before its tally line (build failure) is one failure.
fuzz_tally=$(sed -n 's/^fuzz: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log_dir/fuzz.log" | tail -1)
if [ -n "$fuzz_tally" ]; then add $fuzz_tally; elif [ "$fuzz_rc" -ne 0 ]; then add 0 1; fi
add "$(sed -n 's/^ℹ pass \([0-9]*\)$/\1/p' "$log_dir/node.log" | tail -1)" \
    "$(sed -n 's/^ℹ fail \([0-9]*\)$/\1/p' "$log_dir/node.log" | tail -1)"
if [ -f "$log_dir/python.log" ]; then
  ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\}.*/\1/p' "$log_dir/python.log" | tail -1)
  # `FAILED (failures=1, errors=2, skipped=3)`: only failures and errors count as failed.
  pyfail=$(awk '/^FAILED \(/ {
      while (match($0, /(failures|errors)=[0-9]+/)) {
        split(substr($0, RSTART, RLENGTH), kv, "="); s += kv[2]; $0 = substr($0, RSTART + RLENGTH)
      }
    } END { print s + 0 }' "$log_dir/python.log")
  add "$(( ${ran:-0} - ${pyfail:-0} ))" "${pyfail:-0}"
fi
echo
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
