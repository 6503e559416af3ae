"""`glm-api chat` through a pseudo-terminal, as a person would use it (demo model, local)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time


def _read_until(fd: int, marker: str, seen: list[str], timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while marker not in "".join(seen):
        assert time.monotonic() < deadline, f"no {marker!r} in {''.join(seen)!r}"
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                seen.append(os.read(fd, 4096).decode("utf-8", errors="replace"))
            except OSError:
                break
    return "".join(seen)


def test_chat_streams_answers_clears_and_stops() -> None:
    main_fd, child_fd = pty.openpty()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "glm_api.cli", "chat", "--max-tokens", "8", "--temperature", "0"],
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
        env=env,
        close_fds=True,
    )
    os.close(child_fd)
    seen: list[str] = []
    try:
        _read_until(main_fd, "用户：", seen)
        os.write(main_fd, "你好\n".encode())
        seen.clear()
        text = _read_until(main_fd, "用户：", seen)  # the streamed answer, then a new prompt
        assert "glm-demo：" in text
        os.write(main_fd, b"clear\n")
        _read_until(main_fd, "clear", seen)
        os.write(main_fd, b"stop\n")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main_fd)
