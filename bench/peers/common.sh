# Shared by the bench/peers/*.sh scripts (sourced, not run): venvs, start, readiness.
#
# Every peer script takes CHECKPOINT_DIR PORT, installs its venv on first use, starts the
# server in its own process group (setsid) on 127.0.0.1, waits until it answers, and prints
#   pid=<process group id>  model=<name to send>  version=<what is measured>  log=<file>
# one per line. Exit codes: 0 ready, 2 usage, 3 install failed, 4 start failed or timed out
# (the server is killed then). Stop a peer with: kill -- -<pid>.

set -u
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="$BENCH_DIR/.venvs"
LOG_DIR="${BENCH_LOG_DIR:-/tmp/glm-api-bench/logs}"
READY_TIMEOUT="${PEER_READY_TIMEOUT:-600}"
mkdir -p "$LOG_DIR" "$VENVS"

die() {  # die CODE MESSAGE
    echo "$(basename "$0"): $2" >&2
    exit "$1"
}

usage_check() {  # usage_check "$@": CHECKPOINT_DIR PORT
    [ $# -ge 2 ] || die 2 "usage: $(basename "$0") CHECKPOINT_DIR PORT"
    [ -f "$1/config.json" ] || die 2 "no config.json in $1"
}

# ensure_venv NAME PIP_ARGS...: create bench/.venvs/NAME with torch==2.13.0 first (an
# unpinned torch pulls a multi-GB CUDA build), then PIP_ARGS; a marker file records success.
ensure_venv() {
    local name="$1"
    shift
    local venv="$VENVS/$name"
    [ -f "$venv/.installed" ] && return 0
    echo "installing $name into $venv (first use)" >&2
    python3 -m venv "$venv" || die 3 "python3 -m venv $venv failed"
    "$venv/bin/pip" install -q torch==2.13.0 >&2 || die 3 "pip install torch==2.13.0 failed"
    "$venv/bin/pip" install -q "$@" >&2 || die 3 "pip install $* failed"
    "$venv/bin/pip" freeze >"$venv/.installed"
}

# start_server NAME CMD...: run CMD in a new session (its pid is the process group id).
start_server() {
    local name="$1"
    shift
    LOG_FILE="$LOG_DIR/$name.log"
    setsid "$@" >"$LOG_FILE" 2>&1 </dev/null &
    SERVER_PID=$!
}

# stop_group: TERM the server's process group, KILL it if still there after 30 s.
stop_group() {
    local waited=0
    kill -TERM -- -"$SERVER_PID" 2>/dev/null
    while kill -0 -- -"$SERVER_PID" 2>/dev/null && [ "$waited" -lt 30 ]; do
        sleep 1
        waited=$((waited + 1))
    done
    kill -KILL -- -"$SERVER_PID" 2>/dev/null
}

# wait_ready URL [FAIL_REGEX]: poll until URL answers 200; fail when the server exits, when
# its log matches FAIL_REGEX (a server that stays up after a failed load), or on timeout.
wait_ready() {
    local url="$1" fail_regex="${2:-}" waited=0
    while ! curl -sf -o /dev/null --max-time 5 "$url"; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 20 "$LOG_FILE" >&2
            die 4 "server exited before $url answered (log: $LOG_FILE)"
        fi
        if [ -n "$fail_regex" ] && grep -q -E "$fail_regex" "$LOG_FILE"; then
            stop_group
            grep -E "$fail_regex" "$LOG_FILE" | tail -n 3 >&2
            die 4 "the server reported a failed start (log: $LOG_FILE)"
        fi
        if [ "$waited" -ge "$READY_TIMEOUT" ]; then
            stop_group
            tail -n 20 "$LOG_FILE" >&2
            die 4 "$url did not answer within ${READY_TIMEOUT}s (log: $LOG_FILE)"
        fi
        sleep 2
        waited=$((waited + 2))
    done
}

report_ready() {  # report_ready MODEL VERSION
    echo "pid=$SERVER_PID"
    echo "model=$1"
    echo "version=$2"
    echo "log=$LOG_FILE"
}
