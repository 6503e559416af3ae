"""Decode speed of float32, INT8 and INT4 weights on this machine: prints a markdown table.

A GLM-4-architecture model (default: hidden 1024, 24 layers, 8 heads, 2 KV heads, head_dim
128, intermediate 2816, vocab 151552: 0.59B parameters) is built in memory with random
weights; each row prepares its weights as the loader does: "float32" reorders every linear
for oneDNN once (`pack_linears_`, what `serve` does on a CPU), "float32 (sgemm)" keeps plain
`nn.Linear` (MKL), the int rows quantize the decoder layers one by one (`quantize_linears_`),
"+ out" also the output layer. Each sequence prefills a short prompt, then
`--steps` decode steps run at batch 1 and batch 8; tokens/s = batch * steps / seconds.

    python -m bench.quant_decode                     # the full 0.6B table (minutes)
    python -m bench.quant_decode --layers 2 --steps 4   # a quick look
"""

from __future__ import annotations

import argparse
import time

import torch

from glm_api.config import Quantize
from glm_api.models.attention import AttentionBatch, LayerCache
from glm_api.models.config import GLMConfig
from glm_api.models.glm import GLMForCausalLM
from glm_api.models.packed import pack_linears_
from glm_api.quant import quantize_linears_, weight_bytes

PROMPT_LEN = 16
ROWS = {
    "float32": (Quantize.NONE, True),
    "float32 (sgemm)": (Quantize.NONE, False),
    "int8": (Quantize.INT8, False),
    "int8 + out": (Quantize.INT8, True),
    "int4": (Quantize.INT4, False),
    "int4 + out": (Quantize.INT4, True),
}


def bench_config(num_layers: int) -> GLMConfig:
    return GLMConfig(
        vocab_size=151552,
        hidden_size=1024,
        num_layers=num_layers,
        num_attention_heads=8,
        num_kv_heads=2,
        head_dim=128,
        intermediate_size=2816,
    )


def num_params(num_layers: int) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in GLMForCausalLM(bench_config(num_layers)).parameters())


def build(num_layers: int, mode: Quantize, with_output: bool) -> GLMForCausalLM:
    with torch.device("meta"):
        model = GLMForCausalLM(bench_config(num_layers))
    model.to_empty(device="cpu").eval().requires_grad_(False)
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    for layer in model.decoder_layers():  # quantized as soon as filled, like the loader
        for param in layer.parameters():
            param.normal_(0.0, 0.02, generator=generator)
        quantize_linears_(layer, mode, cpu)
    for name, param in model.named_parameters():
        if "layers." not in name:
            param.normal_(0.0, 0.02, generator=generator)
    if mode == Quantize.NONE and with_output:
        pack_linears_(model)  # as the loader does for float32 on a CPU (batch invariant)
    elif with_output:
        quantize_linears_(model.transformer, mode, cpu)  # what is left: the output layer
    return model


def step(
    model: GLMForCausalLM, ids: list[int], lens: list[int], caches: list[LayerCache]
) -> torch.Tensor:
    """One forward: sequence i (slot i) appends `len(ids) // len(lens)` tokens after lens[i]."""
    num_seqs = len(lens)
    per_seq = len(ids) // num_seqs
    positions = [lens[i] + j for i in range(num_seqs) for j in range(per_seq)]
    batch = AttentionBatch(
        slot_ids=list(range(num_seqs)),
        query_starts=[i * per_seq for i in range(num_seqs)],
        query_lens=[per_seq] * num_seqs,
        cached_lens=list(lens),
        bidirectional_lens=[0] * num_seqs,
    )
    hidden = model(torch.tensor(ids), torch.tensor(positions), batch, caches)
    last = hidden.reshape(num_seqs, per_seq, -1)[:, -1]  # (num_seqs, hidden)
    return model.compute_logits(last).argmax(dim=-1)


def decode_tokens_per_s(model: GLMForCausalLM, batch_size: int, num_steps: int) -> float:
    spec = model.cache_spec
    shape = (batch_size, spec.num_kv_heads, PROMPT_LEN + num_steps + 2, spec.head_dim)
    caches = [LayerCache(torch.zeros(shape), torch.zeros(shape)) for _ in range(spec.num_layers)]
    with torch.inference_mode():
        next_ids = step(
            model, list(range(1, PROMPT_LEN + 1)) * batch_size, [0] * batch_size, caches
        )
        lens = [PROMPT_LEN] * batch_size
        next_ids = step(model, next_ids.tolist(), lens, caches)  # warm-up (packs kernels)
        lens = [n + 1 for n in lens]
        start = time.perf_counter()
        for _ in range(num_steps):
            next_ids = step(model, next_ids.tolist(), lens, caches)
            lens = [n + 1 for n in lens]
        seconds = time.perf_counter() - start
    return batch_size * num_steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    header = " | ".join(f"batch {b} tok/s" for b in args.batch_sizes)
    print(f"| weights | params | MiB | {header} |")
    print("|---|---|---|" + "---|" * len(args.batch_sizes))
    for row in args.rows:
        mode, with_output = ROWS[row]
        model = build(args.layers, mode, with_output)
        mib = weight_bytes(model) / 2**20
        speeds = [decode_tokens_per_s(model, b, args.steps) for b in args.batch_sizes]
        cells = " | ".join(f"{s:.1f}" for s in speeds)
        print(f"| {row} | {num_params(args.layers) / 1e9:.2f}B | {mib:.0f} | {cells} |", flush=True)
        del model


if __name__ == "__main__":
    main()
