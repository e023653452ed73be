# Shared by benches/run.sh and benches/soak.sh (sourced): the servers they start in the
# background print `listening on http://<ip>:<port>` once bound (port 0: the system picks);
# the `halley` binary prints `admin listening on http://<ip>:<port>` (its admin listener) first.

# server_address <pid> <log file> [admin]: prints the server's URL (with `admin`, its admin
# listener's) once its log has it; returns 1 when the process died or 10 s passed first.
server_address() {
  local pid="$1" log_file="$2" prefix="${3:+$3 }" line=""
  for _ in $(seq 1 200); do
    line="$(grep -m1 -o "^${prefix}listening on http://[0-9.]*:[0-9]*" "$log_file" || true)"
    [ -n "$line" ] && { echo "${line#"${prefix}"listening on }"; return 0; }
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# stop_pids <pid>...: SIGTERM to each (a graceful shutdown), SIGKILL to any still running 15 s
# later.
stop_pids() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
