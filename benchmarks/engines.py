"""Engines for the pool questions (fairness, density): built from EngineConfig settings.

No untrusted input. The caps and the idle-memory cap are EngineConfig settings that
runtime.engine hands to its Pool (Pool.from_config). An engine built before that wiring
existed is configured through the pool itself, and the case records that it was.
"""

from __future__ import annotations

from typing import Any


def pool_engine(workers: int, spares: int = 1, **settings: Any) -> tuple[Any, bool]:
    """An Engine with `settings` (max_concurrency_per_app, max_concurrency_per_installation,
    idle_memory_mb); also whether they had to be set on its pool directly."""
    from handlerbox import Engine, EngineConfig

    engine = Engine(config=EngineConfig(workers=workers, **settings), spares=spares)
    pool = engine._pool
    wanted = {"max_per_app": settings.get("max_concurrency_per_app"),
              "max_per_installation": settings.get("max_concurrency_per_installation"),
              "idle_memory_mb": settings.get("idle_memory_mb")}
    admission = pool.admission
    wired = ((wanted["max_per_app"] or workers) == admission.per_app
             and (wanted["max_per_installation"] or workers) == admission.per_installation
             and (wanted["idle_memory_mb"] is None
                  or wanted["idle_memory_mb"] << 20 == pool.warm.cap))
    if not wired:
        pool.configure(**wanted)
    return engine, not wired
