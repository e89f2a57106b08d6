"""EngineConfig: the engine's settings, validated once at the edge; no untrusted input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlerbox.runtime.errors import ConfigError
from handlerbox.runtime.validation import EdgeModel, NonEmpty, problems
from pydantic import Field, ValidationError


class EngineConfig(EdgeModel):
    """The engine's settings; immutable once built.

        config = EngineConfig(workers=4, memory_limit_mb=512, require=["seccomp", "landlock"])
        with Engine(config=config) as engine: ...
        EngineConfig.parse({"workers": 0})   # ConfigError: config.workers: must be at least 1

    `workers` is the global worker budget that all loaded apps share; `require` names
    isolation layers (runtime.isolation.LAYERS) without which the engine refuses to start;
    `isolation=False` turns the optional layers off (benchmarks measure their cost).
    """

    workers: int = Field(default=2, ge=1)
    memory_limit_mb: int = Field(default=256, ge=16)
    max_log_bytes: int = Field(default=64 * 1024, ge=0)
    max_result_bytes: int = Field(default=1024 * 1024, ge=16)
    recycle_after: int = Field(default=1000, ge=1)
    max_queue: int = Field(default=1000, ge=0)
    max_queue_per_app: int = Field(default=100, ge=0)
    require: list[NonEmpty] = Field(default_factory=list)
    isolation: bool = True
    worker_cpu_seconds: int = Field(default=600, ge=1)
    recycle_rss_mb: int = Field(default=192, ge=1)

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> EngineConfig:
        """Validate settings, or raise ConfigError naming each bad one."""
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise ConfigError("\n".join(problems(exc, "config", {0: cls.model_fields}))
                              ) from None
