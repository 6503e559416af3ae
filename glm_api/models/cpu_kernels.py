"""Our CPU kernels (cpu_gemm.c, cpu_attention.c, cpu_ops.c, cpu_decoder.c, cpu_gemm_int8.c,
cpu_greedy.c), built with the system C compiler.

The C files ship inside the package. `load()` compiles them on first use into one library
in the user's cache (`$GLM_API_CACHE_DIR`, else `~/.cache/glm_api`), keyed by a hash of the
sources and flags, and loads it with ctypes (calls release the GIL). Where there is no
AVX2/FMA, no compiler, or the build fails, `load()` returns None and callers keep PyTorch's
own kernels. Where the CPU has AVX-512 with VNNI, the library is built for it (`best_isa`):
the linears, INT8 linears and greedy screen then take up to 16 rows a pass with zmm
registers, with the same bits as the AVX2 build. The library links the OpenMP runtime torch
already loaded (same soname), so `--threads` holds. `GLM_API_CPU_GEMM=0` turns all of it off.

What each kernel does, and why it is ours: cpu_gemm.py (linears), cpu_attention.py (decode
attention over the slot cache), cpu_ops.py (RMSNorm, rotary embedding, SwiGLU), cpu_decoder.py
(a whole decode step of glm.py's layers in one call), cpu_gemm_int8.py (INT8 linears),
greedy_screen.py (a greedy row's argmax without every float32 logit).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger("glm_api.models")

_HERE = Path(__file__).parent
SOURCES = tuple(
    _HERE / name
    for name in (
        "cpu_gemm.c", "cpu_attention.c", "cpu_ops.c", "cpu_decoder.c", "cpu_gemm_int8.c",
        "cpu_greedy.c",
    )
)  # fmt: skip
HEADERS = (_HERE / "cpu_simd.h",)
# no contraction of a * b + c into one FMA where the C says two operations: elementwise
# code rounds as written, the kernels' FMAs are explicit intrinsics
FLAGS = (
    "-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC",
    "-Wl,-Bsymbolic", "-Werror=return-type", "-Werror=implicit-function-declaration",
)  # fmt: skip
#: where the CPU has them, the linears, INT8 linears and greedy screen are built for AVX-512
#: and VNNI (a panel's 16 outputs in one zmm, up to 16 rows a pass; the same bits as AVX2)
AVX512_FLAGS = ("-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni")
#: the /proc/cpuinfo flags those need
AVX512_CPU_FLAGS = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"})
ISAS = ("avx2", "avx512")

_P, _I64, _INT, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
#: function name -> (result type, argument types)
SIGNATURES: dict[str, tuple[type | None, list[type]]] = {
    # x, M, K, panels, N, bias, out, threads
    "glm_linear_f32": (None, [_P, _I64, _I64, _P, _I64, _P, _P, _INT]),
    # q, q_stride, k, k_stride, v, v_stride, key_cache, value_cache, cache_len,
    # rows, slots, lengths, num_seqs, num_heads, num_kv_heads, head_dim, scale, out, threads,
    # kind (cache dtype: 0 float32, 1 float16, 2 bfloat16) -> tasks left undone (no scratch)
    "glm_decode_attention": (_I64, [
        _P, _I64, _P, _I64, _P, _I64, _P, _P, _I64,
        _P, _P, _P, _I64, _I64, _I64, _I64, _F32, _P, _INT, _INT,
    ]),
    # x, weight, eps, rows, dim, out
    "glm_rms_norm_f32": (None, [_P, _P, _F32, _I64, _I64, _P]),
    # hidden, delta, weight, eps, rows, dim, sum, out
    "glm_add_rms_norm_f32": (None, [_P, _P, _P, _F32, _I64, _I64, _P, _P]),
    # x, rows, row_stride, num_heads, head_dim, half, cos, sin
    "glm_rotary_interleaved_f32": (None, [_P, _I64, _I64, _I64, _I64, _I64, _P, _P]),
    # gate_up, rows, inner, out
    "glm_silu_mul_f32": (None, [_P, _I64, _I64, _P]),
    # x, rows, dim, levels, min_scale, codes, scales
    "glm_quantize_rows_f32": (None, [_P, _I64, _I64, _F32, _F32, _P, _P]),
    # acc, rows, dim, scales, bias, out
    "glm_scale_rows_f32": (None, [_P, _I64, _I64, _P, _P, _P]),
    # x, M, K, panels, col_sums, w_scales, N, bias, out, threads -> 0, or -1: no memory
    "glm_linear_int8": (_I64, [_P, _I64, _I64, _P, _P, _P, _I64, _P, _P, _INT]),
    # x, M, K, panels, q_panels, q_scales, bounds, max_errors, norms2, norms1, levels,
    # max_norm, limit, max_panels, approx, ids, threads
    "glm_greedy_f32": (
        None,
        [_P, _I64, _I64, _P, _P, _P, _P, _P, _P, _P, _I64, ctypes.c_double, _I64, _I64, _P, _P,
         _INT],
    ),
    # q, q_stride, key_cache, value_cache, cache_len, rows, slots, visible, num_rows,
    # num_heads, num_kv_heads, head_dim, scale, out, threads, kind -> tasks left undone
    "glm_prefill_attention": (_I64, [
        _P, _I64, _P, _P, _I64, _P, _P, _P, _I64, _I64, _I64, _I64, _F32, _P, _INT, _INT,
    ]),
    # x, rows, dim, row_stride, out (int64)
    "glm_argmax_rows_f32": (None, [_P, _I64, _I64, _I64, _P]),
    # decoder, hidden, M, cos, sin, slots, lengths, key_caches, value_caches, cache_len,
    # rows, work, threads, kv_kind (as glm_decode_attention's kind) -> attention tasks left
    # undone (no scratch memory)
    "glm_decode_step_f32": (
        _I64, [_P, _P, _I64, _P, _P, _P, _P, _P, _P, _I64, _P, _P, _INT, _INT]
    ),
}  # fmt: skip


def _cache_dir() -> Path:
    root = os.environ.get("GLM_API_CACHE_DIR") or Path.home() / ".cache" / "glm_api"
    return Path(root) / "kernels"


@cache
def _cpu_flags() -> frozenset[str] | None:
    """The CPU's flags from /proc/cpuinfo, or None where there is none (macOS).

    Read once: `load()` asks for them on every kernel call (56-59 times a decode step of the
    0.6B model), and reading /proc/cpuinfo took 47 us, 2.7 ms a step."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            line = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return None
    return frozenset(line.partition(":")[2].split()) if line else None


def has_avx2() -> bool:
    """AVX2 with FMA (PyTorch's AVX2 level) and F16C (the float16 KV cache's conversions)."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return False
    flags = _cpu_flags()  # without /proc (macOS), every x86 CPU with AVX2 has F16C
    return flags is None or "f16c" in flags


def best_isa() -> str:
    """The instruction set the kernels are built for here: "avx512" where the CPU has AVX-512
    with VNNI, else "avx2"; `GLM_API_CPU_ISA=avx2` keeps AVX2 (to compare the two)."""
    wanted = os.environ.get("GLM_API_CPU_ISA", "").lower()
    if wanted == "avx2":
        return "avx2"
    flags = _cpu_flags()
    return "avx512" if flags is not None and AVX512_CPU_FLAGS <= flags else "avx2"


def flags_for(isa: str) -> tuple[str, ...]:
    """The compiler flags of one build."""
    if isa not in ISAS:
        raise ValueError(f"unknown instruction set {isa!r}: one of {ISAS}")
    return FLAGS + AVX512_FLAGS if isa == "avx512" else FLAGS


def _build(compiler: str, flags: tuple[str, ...], target: Path) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        command = [compiler, *flags, *(str(s) for s in SOURCES), "-o", str(built), "-lm"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log.info("CPU kernels did not build (%s): %s", compiler, result.stderr.strip()[-300:])
            return False
        os.replace(built, target)  # atomic: a concurrent loader sees all of it or nothing
    return True


def load() -> ctypes.CDLL | None:
    """The built kernel library, or None where it cannot run here (callers fall back).

    Where the AVX-512 build fails (a compiler without `-mavx512vnni`, say), the AVX2 one
    serves."""
    isa = best_isa()
    library = load_isa(isa)
    if library is None and isa != "avx2":
        library = load_isa("avx2")
    return library


@cache
def load_isa(isa: str) -> ctypes.CDLL | None:
    """The library built for `isa` (one of `ISAS`; the CPU must have it), or None."""
    flags = flags_for(isa)
    if os.environ.get("GLM_API_CPU_GEMM", "1") == "0" or not has_avx2():
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler found: CPU kernels are PyTorch's")
        return None
    digest = hashlib.sha256()
    for source in SOURCES + HEADERS:
        digest.update(source.read_bytes())
    digest.update(" ".join(flags).encode())
    target = _cache_dir() / f"glm_kernels-{isa}-{digest.hexdigest()[:16]}.so"
    try:
        if not target.is_file() and not _build(compiler, flags, target):
            return None
        library = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as error:
        log.info("CPU kernels unavailable (%s): PyTorch's serve", error)
        return None
    for name, (restype, argtypes) in SIGNATURES.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes
    return library
