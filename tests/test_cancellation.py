"""Cancellation and shutdown under asyncio: a cancelled dispatch never keeps a worker, a
queue place or a wake-up, and closing an engine from a coroutine never deadlocks."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from conftest import APPS, make_payload

from handlerbox import Engine, EngineClosed


def busy_payload(loops: int) -> dict[str, Any]:
    return make_payload("onAgentUpdate", loops=loops)


async def wait_for(check: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.005)


def test_cancelling_a_queued_dispatch_does_not_swallow_the_next_wake_up() -> None:
    """workers=1: one dispatch runs, two wait; the first waiter is cancelled. When the worker
    comes free, the second waiter must get it (it used to wait out its whole limit and end
    `overloaded` while the pool sat idle)."""
    with Engine(workers=1, spares=0) as engine:
        app = engine.load_app(APPS / "echo", timeout=5)

        async def scenario() -> list[Any]:
            running = asyncio.ensure_future(engine.dispatch_async(app, busy_payload(3 * 10**6)))
            await wait_for(lambda: engine.stats()["busy"] == 1)
            first = asyncio.ensure_future(engine.dispatch_async(app, make_payload()))
            second = asyncio.ensure_future(engine.dispatch_async(app, make_payload()))
            await wait_for(lambda: engine.stats()["waiting"] == 2)
            first.cancel()
            results = await asyncio.gather(running, second)
            with pytest.raises(asyncio.CancelledError):
                await first
            return results

        started = time.monotonic()
        results = asyncio.run(scenario())
        assert [r.outcome for r in results] == ["ok", "ok"]
        assert time.monotonic() - started < 5  # the limit is 5 s: nobody waited it out
        assert engine.stats()["waiting"] == 0


@pytest.mark.parametrize("stage", ["queued", "spawning", "running"])
def test_a_cancel_at_each_wait_gives_everything_back(stage: str) -> None:
    with Engine(workers=1, spares=0) as engine:
        app = engine.load_app(APPS / "echo", timeout=5)

        async def scenario() -> None:
            blocker = None
            if stage == "queued":
                blocker = asyncio.ensure_future(engine.dispatch_async(app, busy_payload(10**6)))
                await wait_for(lambda: engine.stats()["busy"] == 1)
            call = asyncio.ensure_future(engine.dispatch_async(app, busy_payload(10**8)))
            if stage == "queued":
                await wait_for(lambda: engine.stats()["waiting"] == 1)
            elif stage == "running":
                await wait_for(lambda: engine.stats()["busy"] == 1)
                await asyncio.sleep(0.05)
            else:
                await asyncio.sleep(0)  # the acquire is under way
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            if blocker is not None:
                assert (await blocker).outcome == "ok"

        asyncio.run(scenario())
        assert_back_to_idle(engine)
        assert engine.dispatch(app, make_payload()).outcome == "ok"


def test_many_random_cancellations_leave_the_pool_idle_with_its_full_budget() -> None:
    rng = random.Random(7)
    with Engine(workers=2, spares=1) as engine:
        apps = [engine.load_app(APPS / "echo", timeout=5) for _ in range(2)]

        async def one(i: int) -> None:
            payload = busy_payload(rng.choice([10, 10**4, 10**5, 10**6]))
            payload["account_id"] = f"acct-{i % 3}"
            call = asyncio.ensure_future(engine.dispatch_async(rng.choice(apps), payload))
            await asyncio.sleep(rng.choice([0, 0, 0.001, 0.005, 0.02]))
            call.cancel()
            try:
                await call
            except asyncio.CancelledError:
                pass

        async def scenario() -> None:
            await asyncio.gather(*(one(i) for i in range(60)))

        asyncio.run(scenario())
        assert_back_to_idle(engine)
        outcomes = [engine.dispatch(app, make_payload()).outcome for app in apps * 2]
        assert outcomes == ["ok"] * 4


def assert_back_to_idle(engine: Engine) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats["busy"] == 0 and stats["waiting"] == 0 and stats["inflight"] == 0:
            break
        time.sleep(0.01)
    stats = engine.stats()
    assert (stats["busy"], stats["waiting"], stats["inflight"]) == (0, 0, 0), stats
    assert stats["bound"] <= stats["budget"]


def test_close_from_a_coroutine_with_dispatches_in_flight_does_not_deadlock() -> None:
    """`with Engine()` around `await dispatch_async` calls close() on the loop's own thread:
    it must return, and the dispatches in flight must still finish."""
    engine = Engine(workers=1, spares=0)
    app = engine.load_app(APPS / "echo", timeout=5)

    async def scenario() -> Any:
        call = asyncio.ensure_future(engine.dispatch_async(app, busy_payload(10**6)))
        await wait_for(lambda: engine.stats()["busy"] == 1)
        engine.close()  # must not block this loop
        assert engine.closed
        with pytest.raises(EngineClosed):
            await engine.dispatch_async(app, make_payload())
        return await call

    assert asyncio.run(asyncio.wait_for(scenario(), 20)).outcome == "ok"
    assert engine.zygote_pid is None or not _alive(engine.zygote_pid)


def test_async_with_drains_then_stops() -> None:
    async def scenario() -> Any:
        async with Engine(workers=1, spares=0) as engine:
            app = engine.load_app(APPS / "echo", timeout=5)
            call = asyncio.ensure_future(engine.dispatch_async(app, busy_payload(10**6)))
            await wait_for(lambda: engine.stats()["busy"] == 1)
        assert engine.closed and call.done()
        return call.result()

    assert asyncio.run(asyncio.wait_for(scenario(), 20)).outcome == "ok"


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
