#!/usr/bin/env bash
# Peer 2: `transformers serve --continuous-batching` (paged attention, batched decode) in
# bench/.venvs/transformers-serve.
#   bench/peers/transformers_serve.sh CHECKPOINT_HF_DIR PORT
# --cb-num-blocks is given because the default sizing takes 90% of system memory on CPU:
# CB_NUM_BLOCKS blocks of CB_BLOCK_SIZE tokens (default 1024 x 32 = 32,768 tokens of cache,
# room for 16 requests of 2,048 tokens).
source "$(dirname "$0")/common.sh"
usage_check "$@"
ckpt="$(cd "$1" && pwd)"
port="$2"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.24.0}"
ensure_venv transformers-serve "transformers[serving]==$TRANSFORMERS_VERSION"
venv="$VENVS/transformers-serve"
start_server transformers-serve env OMP_WAIT_POLICY=PASSIVE "$venv/bin/transformers" serve "$ckpt" \
    --continuous-batching --cb-num-blocks "${CB_NUM_BLOCKS:-1024}" \
    --cb-block-size "${CB_BLOCK_SIZE:-32}" --cb-max-batch-tokens "${CB_MAX_BATCH_TOKENS:-256}" \
    --device cpu --dtype float32 --host 127.0.0.1 --port "$port" --log-level warning
wait_ready "http://127.0.0.1:$port/health"
report_ready "$ckpt" "transformers $("$venv/bin/python" -c 'import transformers; print(transformers.__version__)') serve --continuous-batching, torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
