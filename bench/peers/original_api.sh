#!/usr/bin/env bash
# Peer 1: the original GLM API's way of serving (transformers generate, one request at a
# time), bench/peers/original_api.py in bench/.venvs/original-api.
#   bench/peers/original_api.sh CHECKPOINT_HF_DIR PORT
source "$(dirname "$0")/common.sh"
usage_check "$@"
ckpt="$(cd "$1" && pwd)"
port="$2"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.24.0}"
ensure_venv original-api "transformers==$TRANSFORMERS_VERSION" fastapi uvicorn
py="$VENVS/original-api/bin/python"
start_server original-api env OMP_WAIT_POLICY=PASSIVE "$py" "$BENCH_DIR/peers/original_api.py" \
    --model "$ckpt" --host 127.0.0.1 --port "$port" --served-model-name glm-4
wait_ready "http://127.0.0.1:$port/v1/models"
report_ready glm-4 "transformers $("$py" -c 'import transformers; print(transformers.__version__)'), torch $("$py" -c 'import torch; print(torch.__version__)')"
