#!/usr/bin/env bash
# GLM API itself, from the project venv (/work/main/.venv, or GLM_API_VENV).
#   bench/peers/glm_api.sh CHECKPOINT_DIR PORT [extra glm-api serve flags, e.g. --quantize int8]
source "$(dirname "$0")/common.sh"
usage_check "$@"
ckpt="$(cd "$1" && pwd)"
port="$2"
shift 2
venv="${GLM_API_VENV:-$(cd "$BENCH_DIR/.." && pwd)/.venv}"
[ -x "$venv/bin/python" ] || die 3 "no project venv at $venv (python3 -m venv .venv && .venv/bin/pip install -e .)"
if [ -x "$venv/bin/glm-api" ]; then
    cmd=("$venv/bin/glm-api")
else  # a checkout whose package is not installed: run the module from the project root
    cmd=(env "PYTHONPATH=$(cd "$BENCH_DIR/.." && pwd)" "$venv/bin/python" -m glm_api.cli)
fi
name="glm-api${1:+-$(echo "$*" | tr -c 'a-z0-9\n' '-' | sed 's/--*/-/g;s/-$//')}"
start_server "$name" "${cmd[@]}" serve --model "$ckpt" --served-model-name glm4-bench \
    --host 127.0.0.1 --port "$port" --max-num-seqs "${MAX_NUM_SEQS:-16}" "$@"
# /health, not /v1/models: the server listens at once and answers 503 until the model is
# loaded, and stays up (503) when the load fails: its log line says so
wait_ready "http://127.0.0.1:$port/health" "failed to load"
version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("glm-api"))' 2>/dev/null || echo "checkout")"
report_ready glm4-bench "glm-api $version ($(cd "$BENCH_DIR/.." && git describe --always --dirty 2>/dev/null))${*:+ $*}"
