"""EngineConfig: the engine's settings, validated once at the edge; no untrusted input."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError, field_validator

from handlerbox.runtime.errors import ConfigError
from handlerbox.runtime.validation import EdgeModel, NonEmpty, problems


class EngineConfig(EdgeModel):
    """The engine's settings; immutable once built.

        config = EngineConfig(workers=4, memory_limit_mb=512, require=["seccomp", "landlock"])
        with Engine(config=config) as engine: ...
        EngineConfig.parse({"workers": 0})   # ConfigError: config.workers: must be at least 1

    `workers` is the global worker budget that all loaded apps share; `require` names
    isolation layers (runtime.isolation.LAYERS) without which the engine refuses to start;
    `isolation=False` turns the optional layers off (benchmarks measure their cost);
    `database` is the SQLite file that holds installations, stored data and schedules (a
    temporary file when unset); `max_host_calls` caps service calls per invocation;
    `scheduler` fires scheduled events (one-time schedules must be at least
    `schedule_min_lead_seconds` ahead: the platform's 300 by default); `webhook_base_url`
    prefixes webhook target URLs; outbound requests may reach private addresses only in
    `allow_networks` (CIDRs, e.g. "127.0.0.1/32" for development) and use http only for
    `allow_http_hosts`.

    Fairness and density (runtime.pool): `workers` counts dispatches *running* at once; idle
    warm workers do not count, and stay warm while their memory (USS: pages shared with the
    zygote count once, there) fits `idle_memory_mb`, the least recently used evicted beyond
    it. `max_concurrency_per_app` and `max_concurrency_per_installation` cap the dispatches
    one app, or one installation, may run at once (None: the budget); waiting dispatches are
    served round-robin across apps.
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
    database: str | None = None
    max_host_calls: int = Field(default=100, ge=0)
    scheduler: bool = True
    schedule_min_lead_seconds: int = Field(default=300, ge=0)
    schedule_min_period_seconds: int = Field(default=300, ge=1)
    webhook_base_url: str = "http://127.0.0.1:8080"
    allow_networks: list[str] = Field(default_factory=list)
    allow_http_hosts: list[str] = Field(default_factory=list)
    # issue 14: fairness and density (read by runtime.pool.Pool.from_config)
    max_concurrency_per_app: int | None = Field(default=None, ge=1)
    max_concurrency_per_installation: int | None = Field(default=None, ge=1)
    idle_memory_mb: int = Field(default=512, ge=0)

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an IP network: write a CIDR like "
                                 "127.0.0.1/32 or ::1/128") from None
        return networks

    @field_validator("webhook_base_url")
    @classmethod
    def _base_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")) or url.endswith("/"):
            raise ValueError("must be an http(s) URL without a trailing slash, like "
                             "https://hooks.example.com")
        return url

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> EngineConfig:
        """Validate settings, or raise ConfigError naming each bad one."""
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise ConfigError("\n".join(problems(exc, "config", {0: cls.model_fields}))
                              ) from None
