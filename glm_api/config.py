"""Configuration: `EngineConfig` for the engine, `ServerSettings` for the whole server.

Every CLI flag maps 1:1 to a field here, and every field is also settable as a `GLM_API_*`
environment variable (pydantic-settings). Nothing is inferred from file names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Device(str, enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class DType(str, enum.Enum):
    AUTO = "auto"  # float32 on CPU (bf16 matmuls are ~8x slower there), bfloat16 on CUDA
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class KVCacheDType(str, enum.Enum):
    """What the KV cache holds; "auto": the model's dtype (float32 on a CPU)."""

    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"  # half the memory and the attention's traffic; the CPU kernel reads it
    BFLOAT16 = "bfloat16"


class Quantize(str, enum.Enum):
    NONE = "none"
    INT8 = "int8"
    INT4 = "int4"


@dataclass(slots=True)
class EngineConfig:
    """Everything the engine needs to load a model and size its cache and batches."""

    model: str | None = None  # folder or hub id; None -> the built-in demo model
    device: Device = Device.AUTO
    dtype: DType = DType.AUTO
    quantize: Quantize = Quantize.NONE
    threads: int | None = None  # torch intra-op threads; None -> all cores
    max_num_seqs: int = 16  # requests decoded together in one step
    max_model_len: int | None = None  # None -> min(checkpoint's context, 8192)
    max_num_batched_tokens: int = 256  # tokens per step (prefill chunks + decodes)
    max_queue_len: int = 256  # waiting requests beyond this are refused (server busy)
    kv_cache_memory_gb: float | None = None  # None -> a share of free memory
    kv_cache_dtype: KVCacheDType = KVCacheDType.AUTO
    seed: int = 0
    #: a request's float32 output does not depend on what else is in the batch (costs some
    #: single-stream speed on a CPU; see glm_api/models/packed.py)
    batch_invariant: bool = True
    #: a new request reuses the keys/values of a prompt prefix a finished one left in its
    #: slot (engine/scheduler.py); the reply is the same, only sooner
    prefix_caching: bool = True
    served_model_name: str | None = None
    prefix_checkpoint: str | None = None  # P-tuning v2 prefix_encoder weights
    extra: dict[str, str] = field(default_factory=dict)


class ServerSettings(BaseSettings):
    """Server-wide settings from flags and `GLM_API_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="GLM_API_", extra="ignore")

    model: str | None = None
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    device: Device = Device.AUTO
    dtype: DType = DType.AUTO
    quantize: Quantize = Quantize.NONE
    threads: int | None = None
    max_num_seqs: int = 16
    max_model_len: int | None = None
    max_num_batched_tokens: int = 256
    max_queue_len: int = 256
    kv_cache_memory_gb: float | None = None
    kv_cache_dtype: KVCacheDType = KVCacheDType.AUTO
    batch_invariant: bool = True
    prefix_caching: bool = True
    prefix_checkpoint: str | None = None
    #: "PATH_OR_ID" or "NAME=PATH_OR_ID"; the first is the default; empty -> built-in MiniLM
    embedding_model: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: keys, or "@FILE" naming a file with one key per line
    api_key: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: str = "info"

    @field_validator("embedding_model", "api_key", "allowed_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """An environment variable holds a comma-separated list."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            model=self.model,
            device=self.device,
            dtype=self.dtype,
            quantize=self.quantize,
            threads=self.threads,
            max_num_seqs=self.max_num_seqs,
            max_model_len=self.max_model_len,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_queue_len=self.max_queue_len,
            kv_cache_memory_gb=self.kv_cache_memory_gb,
            kv_cache_dtype=self.kv_cache_dtype,
            batch_invariant=self.batch_invariant,
            prefix_caching=self.prefix_caching,
            served_model_name=self.served_model_name,
            prefix_checkpoint=self.prefix_checkpoint,
        )
