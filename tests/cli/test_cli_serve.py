"""`glm-api serve`: flags and GLM_API_* variables become settings; the real command starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from glm_api.cli import _flags_to_settings, build_parser
from glm_api.config import KVCacheDType, Quantize, ServerSettings
from tests.server.conftest import free_port, wait_healthy


def settings_of(*argv: str) -> ServerSettings:
    return _flags_to_settings(build_parser().parse_args(["serve", *argv]))  # type: ignore[no-any-return]


def test_defaults_listen_on_loopback() -> None:
    settings = settings_of()
    assert (settings.host, settings.port, settings.model) == ("127.0.0.1", 8000, None)
    assert settings.batch_invariant is True and settings.quantize is Quantize.NONE


def test_every_serve_flag_is_a_setting() -> None:
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    dests = {a.dest for a in serve._actions if a.dest != "help"}
    assert dests <= set(ServerSettings.model_fields)


def test_flags_map_one_to_one() -> None:
    settings = settings_of(
        "--model", "/m", "--port", "9001", "--quantize", "int8", "--max-num-seqs", "4",
        "--no-batch-invariant", "--embedding-model", "a=/x", "--embedding-model", "/y",
        "--api-key", "k1", "--api-key", "k2", "--allowed-origins", "http://a",
        "--kv-cache-dtype", "float16",
    )  # fmt: skip
    assert (settings.model, settings.port, settings.quantize) == ("/m", 9001, Quantize.INT8)
    assert (settings.max_num_seqs, settings.batch_invariant) == (4, False)
    assert settings.embedding_model == ["a=/x", "/y"]
    assert settings.api_key == ["k1", "k2"] and settings.allowed_origins == ["http://a"]
    assert settings.engine_config().kv_cache_dtype is KVCacheDType.FLOAT16
    assert settings_of().kv_cache_dtype is KVCacheDType.AUTO


def test_an_unknown_kv_cache_dtype_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        settings_of("--kv-cache-dtype", "int3")
    assert exit_info.value.code == 2
    assert "--kv-cache-dtype: invalid choice: 'int3'" in capsys.readouterr().err


def test_environment_variables_and_flags_over_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLM_API_PORT", "9100")
    monkeypatch.setenv("GLM_API_MAX_MODEL_LEN", "1024")
    monkeypatch.setenv("GLM_API_API_KEY", "k1, k2")
    monkeypatch.setenv("GLM_API_EMBEDDING_MODEL", "a=/x,/y")
    monkeypatch.setenv("GLM_API_BATCH_INVARIANT", "false")
    settings = settings_of()
    assert (settings.port, settings.max_model_len, settings.batch_invariant) == (9100, 1024, False)
    assert settings.api_key == ["k1", "k2"] and settings.embedding_model == ["a=/x", "/y"]
    assert settings_of("--port", "9200").port == 9200


def test_serve_starts_says_what_it_loaded_and_stops(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "glm_api.cli", "serve", "--port", str(port)]
    env = {**os.environ, "GLM_API_MAX_MODEL_LEN": "256", "GLM_API_KV_CACHE_DTYPE": "float16"}
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", lambda: proc.poll() is None, "glm-api serve")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) in (0, 130)
    text = log.read_text()
    assert f"listening on http://127.0.0.1:{port}" in text
    assert "loaded glm-demo (demo) on cpu in float32" in text
    assert "context 256 tokens" in text and "KV slots (float16)" in text
    assert "random weights" in text.lower()  # the demo warning
