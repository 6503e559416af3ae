"""openmp.py: freeing a thread's OpenMP workers, so the engine thread's pool is the only one."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from glm_api import openmp
from glm_api.config import EngineConfig
from glm_api.engine.async_engine import AsyncEngine
from glm_api.models.loader import load_model

needs_libgomp = pytest.mark.skipif(
    openmp._libgomp() is None, reason="torch runs no libgomp here (another OpenMP or none)"
)


def num_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def settled_num_threads(expected: int) -> int:
    """The thread count once it reaches `expected`, or after 5 s (libgomp's workers are
    detached: they exit soon after the pool is freed, not before it returns)."""
    deadline = time.monotonic() + 5
    while num_threads() != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return num_threads()


@needs_libgomp
def test_release_pool_frees_the_calling_threads_workers_until_its_next_region() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.ones(4_000_000)
        (x + 1).sum()  # a parallel region: this thread keeps one worker
        before = num_threads()
        assert openmp.release_pool()
        assert settled_num_threads(before - 1) == before - 1
        (x + 1).sum()  # the next region brings it back
        assert num_threads() == before
    finally:
        torch.set_num_threads(threads)


def test_the_engine_frees_the_loading_threads_pool_before_its_own_thread_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, bool]] = []
    config = EngineConfig(max_num_seqs=2, max_model_len=64)
    engine = AsyncEngine.from_loaded(load_model(None, config), config)

    def release() -> bool:  # on which thread, and whether the engine's thread runs yet
        calls.append((threading.current_thread().name, engine._thread is not None))
        return True

    monkeypatch.setattr(openmp, "release_pool", release)
    engine.start()
    try:
        assert calls == [(threading.current_thread().name, False)]
    finally:
        engine.shutdown()
