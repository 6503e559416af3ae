"""Our float32 CPU linear kernel (cpu_gemm.c): built once with the system's C compiler.

Why a kernel of our own: on the AVX2 EPYC we measure on, the linears of one decode step of
the 0.6B GLM-4 benchmark model took (ms, 2 threads; oneDNN over a weight reordered once):

| rows | oneDNN | oneDNN, 1 row computed as 2 | cpu_gemm.c |
| ---: | ---: | ---: | ---: |
| 1 | 45 | 97-100 | 45 |
| 16 | 194-199 | | 127 |
| 128 | 939-990 | | 792 |

and, unlike oneDNN (one kernel for one row, another for two or more), every row's result is
bit-identical for any number of rows, so batch invariance costs a single stream nothing.

The C file ships inside the package. `load()` compiles it on first use into the user's
cache (`$GLM_API_CACHE_DIR`, else `~/.cache/glm_api`), keyed by a hash of the source and
flags, and loads it with ctypes (calls release the GIL). Where there is no AVX2/FMA, no
compiler, or the build fails, `load()` returns None and the caller keeps oneDNN.
It links the OpenMP runtime torch already loaded (same soname), so `--threads` holds.
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

SOURCE = Path(__file__).with_name("cpu_gemm.c")
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC")
PANEL = 16  # outputs per weight panel (cpu_gemm.c)


def _cache_dir() -> Path:
    root = os.environ.get("GLM_API_CACHE_DIR") or Path.home() / ".cache" / "glm_api"
    return Path(root) / "kernels"


def _has_avx2() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _build(compiler: str, target: Path) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        command = [compiler, *FLAGS, str(SOURCE), "-o", str(built)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log.info("cpu_gemm.c did not build (%s): %s", compiler, result.stderr.strip()[-300:])
            return False
        os.replace(built, target)  # atomic: a concurrent loader sees all of it or nothing
    return True


@cache
def load() -> ctypes.CDLL | None:
    """The built kernel library, or None where it cannot run here (the caller falls back)."""
    if os.environ.get("GLM_API_CPU_GEMM", "1") == "0" or not _has_avx2():
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler found: float32 linears run on oneDNN")
        return None
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = _cache_dir() / f"cpu_gemm-{digest}.so"
    try:
        if not target.is_file() and not _build(compiler, target):
            return None
        library = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as error:
        log.info("cpu_gemm unavailable (%s): float32 linears run on oneDNN", error)
        return None
    function = library.glm_linear_f32
    function.restype = None
    function.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
    ]  # fmt: skip
    return library


def to_panels(weight: torch.Tensor) -> torch.Tensor:
    """`(N, K)` float32 -> `(ceil(N / 16), K, 16)` panels, zero-padded (the kernel's layout)."""
    num_out, num_in = weight.shape
    num_panels = -(-num_out // PANEL)
    padded = torch.zeros(num_panels * PANEL, num_in, dtype=torch.float32)
    padded[:num_out] = weight
    return padded.reshape(num_panels, PANEL, num_in).transpose(1, 2).contiguous()


def from_panels(panels: torch.Tensor, num_out: int) -> torch.Tensor:
    """The inverse of `to_panels`: the plain `(N, K)` weight."""
    num_panels, num_in, _ = panels.shape
    return panels.transpose(1, 2).reshape(num_panels * PANEL, num_in)[:num_out].contiguous()


def linear(
    library: ctypes.CDLL,
    rows: torch.Tensor,
    panels: torch.Tensor,
    num_out: int,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """`(M, K)` float32 rows -> `(M, N)`; every row computed the same way for any M."""
    rows = rows.contiguous()  # raw pointers below: no-ops for the contiguous tensors we get
    bias = bias.contiguous() if bias is not None else None
    out = torch.empty(rows.shape[0], num_out, dtype=torch.float32)  # (M, N)
    library.glm_linear_f32(
        rows.data_ptr(),
        rows.shape[0],
        rows.shape[1],
        panels.data_ptr(),
        num_out,
        bias.data_ptr() if bias is not None else None,
        out.data_ptr(),
        torch.get_num_threads(),
    )
    return out
