"""RedisSchedules: the schedule store on Redis, so scheduler processes on many hosts fire each
occurrence once. No untrusted input: ScheduleService has checked every argument already.

Layout: schedules are spread over `buckets` by a stable hash of the installation; every key
of a bucket shares the hash tag `{b}`, so each step below touches one slot (Redis Cluster
ready) and buckets spread the load over a cluster's nodes.

    {prefix}sch:{b}              hash  "<installation>\\n<name>" -> the schedule as JSON
    {prefix}sch:{b}:due:<app>    zset  same field -> next_run, unpaused schedules of <app>
    {prefix}sch:{b}:count        hash  "<installation>\\n<kind>" -> how many (the quotas)
    {prefix}sch:apps             set   the apps that ever had a schedule (an index only)

A name cannot hold a newline (schedules.NAME), so the field splits at its last one. The due
sets are per app because an engine claims only the apps it runs (`apps=`): it reads the
sets of its apps, never pages through other apps' due entries.

Why this claim: an occurrence is claimed by ONE Lua script that re-reads the schedule's
score, checks it is still due, and removes the one-time schedule or moves the recurring one
to its next slot before returning it. A Redis script runs atomically, so two schedulers that
both saw a due field cannot both claim it: the second finds it gone or moved. This is the
SQLite backend's BEGIN IMMEDIATE claim, without locks or leases to expire, and without
holding anything across a network round trip. `claim_due` first peeks every (bucket, app)
due set (read-only), merges the candidates earliest first, then claims them set by set; a
peeked field another scheduler took meanwhile is simply skipped. Like SQLite, an occurrence
whose claimer dies before handing it off is lost (at most once); the cluster's fire step is
one enqueue whose message id is the occurrence key, so a duplicate enqueue cannot run twice.

Writes from handlers (create, update, pause, ...) run as WATCH/MULTI transactions on their
bucket, so the quota check and the write are atomic; a lost race is retried.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Callable, Collection
from dataclasses import asdict, replace
from typing import Any, TypeVar

import redis

from handlerbox.runtime.services.base import Scope, ServiceError
from handlerbox.runtime.services.kv_redis import unavailable_as_503
from handlerbox.runtime.services.schedules import (
    ONE_TIME,
    RECURRING,
    Occurrence,
    Schedule,
    ScheduleBackend,
    ScheduleLimits,
    check_room,
    exists,
    missing,
)

DEFAULT_BUCKETS = 16
MAX_RACES = 100
T = TypeVar("T")

# KEYS: rows, due, count. ARGV: now, then the fields to claim. Returns flat triples
# {field, row, due, missed} for the ones still due.
_CLAIM = """
local units = {minutes = 60, hours = 3600, days = 86400}
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
    local field = ARGV[i]
    local score = redis.call('ZSCORE', KEYS[2], field)
    if score and tonumber(score) <= now then
        local row = redis.call('HGET', KEYS[1], field)
        local s = cjson.decode(row)
        local next_run = tonumber(score)
        local due, missed = next_run, 0
        if s.time_unit == cjson.null then
            redis.call('HDEL', KEYS[1], field)
            redis.call('ZREM', KEYS[2], field)
            local installation = string.match(field, '^(.*)\\n[^\\n]*$')
            redis.call('HINCRBY', KEYS[3], installation .. '\\none-time', -1)
        else
            local period = units[s.time_unit] * s.frequency
            missed = math.floor((now - next_run) / period)
            due = next_run + missed * period
            redis.call('ZADD', KEYS[2], due + period, field)
        end
        table.insert(out, field)
        table.insert(out, row)
        table.insert(out, tostring(due))
        table.insert(out, tostring(missed))
    end
end
return out
"""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisSchedules(ScheduleBackend):
    """The ScheduleBackend protocol on Redis; thread-safe; any number of processes may share
    one (same `prefix` and `buckets`: changing `buckets` needs the store emptied first)."""

    def __init__(self, client: redis.Redis, prefix: str = "hb:",
                 buckets: int = DEFAULT_BUCKETS) -> None:
        if buckets < 1:
            raise ValueError("buckets must be at least 1")
        self.client, self.prefix, self.buckets = client, prefix, buckets
        self._claim = client.register_script(_CLAIM)

    @classmethod
    def from_url(cls, url: str, prefix: str = "hb:",
                 buckets: int = DEFAULT_BUCKETS) -> RedisSchedules:
        return cls(redis.Redis.from_url(url), prefix, buckets)

    # -- keys ------------------------------------------------------------------------------

    def _bucket(self, installation: str) -> int:
        digest = hashlib.sha1(installation.encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:8], "big") % self.buckets

    def _keys(self, bucket: int, app: str) -> tuple[str, str, str]:
        """(rows, the app's due set, counts) of a bucket: one hash slot."""
        rows = f"{self.prefix}sch:{{{bucket}}}"
        return rows, f"{rows}:due:{app}", rows + ":count"

    def _apps(self, apps: Collection[str] | None) -> list[str]:
        if apps is not None:
            return sorted(apps)
        return sorted(_text(app) for app in self.client.smembers(f"{self.prefix}sch:apps"))

    # -- rows ------------------------------------------------------------------------------

    @staticmethod
    def _encode(scope: Scope, schedule: Schedule) -> str:
        return json.dumps({**asdict(schedule), "app": scope.app,
                           "account_id": scope.account_id})

    @staticmethod
    def _decode(row: Any, score: Any) -> Schedule:
        fields = json.loads(row)
        for extra in ("app", "account_id"):
            fields.pop(extra)
        schedule = Schedule(**fields)
        if score is not None and not schedule.paused:
            schedule = replace(schedule, next_run=int(float(score)))
        return schedule

    def _read(self, pipe: Any, rows: str, due: str, field: str) -> Schedule | None:
        row = pipe.hget(rows, field)
        return None if row is None else self._decode(row, pipe.zscore(due, field))

    def _transaction(self, scope: Scope, body: Callable[[Any, tuple[str, str, str], str], T]
                     ) -> T:
        """Run `body(pipe, keys, installation)` under WATCH of the bucket's keys; it reads in
        immediate mode, then calls pipe.multi() and queues its writes. Retried on a race."""
        keys = self._keys(self._bucket(scope.installation), scope.app)
        with unavailable_as_503("schedule store"), self.client.pipeline() as transaction:
            pipe: Any = transaction  # redis-py's pipeline methods are untyped
            for _ in range(MAX_RACES):
                try:
                    pipe.watch(*keys)
                    result = body(pipe, keys, scope.installation)
                    if pipe.explicit_transaction:
                        pipe.execute()
                    else:
                        pipe.unwatch()
                    return result
                except redis.WatchError:
                    continue
        raise ServiceError(503, "the schedule store is busy; retry the operation later")

    @staticmethod
    def _count(pipe: Any, count_key: str, installation: str, kind: str) -> int:
        return int(pipe.hget(count_key, f"{installation}\n{kind}") or 0)

    @staticmethod
    def _place(pipe: Any, due: str, field: str, schedule: Schedule) -> None:
        if schedule.paused:
            pipe.zrem(due, field)
        else:
            pipe.zadd(due, {field: schedule.next_run})

    # -- ScheduleBackend -------------------------------------------------------------------

    def create(self, scope: Scope, schedule: Schedule, limits: ScheduleLimits) -> None:
        field = f"{scope.installation}\n{schedule.name}"

        def body(pipe: Any, keys: tuple[str, str, str], installation: str) -> None:
            rows, due, count = keys
            if pipe.hexists(rows, field):
                raise exists(schedule.name)
            check_room(schedule.kind, self._count(pipe, count, installation, schedule.kind),
                       limits)
            pipe.multi()
            pipe.hset(rows, field, self._encode(scope, schedule))
            pipe.hincrby(count, f"{installation}\n{schedule.kind}", 1)
            self._place(pipe, due, field, schedule)

        self._transaction(scope, body)
        with unavailable_as_503("schedule store"):
            self.client.sadd(f"{self.prefix}sch:apps", scope.app)

    def update(self, scope: Scope, schedule: Schedule, limits: ScheduleLimits) -> Schedule:
        field = f"{scope.installation}\n{schedule.name}"

        def body(pipe: Any, keys: tuple[str, str, str], installation: str) -> Schedule:
            rows, due, count = keys
            old = self._read(pipe, rows, due, field)
            if old is None:
                raise missing(schedule.name)
            if old.kind != schedule.kind:
                check_room(schedule.kind,
                           self._count(pipe, count, installation, schedule.kind), limits)
            new = replace(schedule, paused=old.paused, created=old.created)
            pipe.multi()
            pipe.hset(rows, field, self._encode(scope, new))
            if old.kind != new.kind:
                pipe.hincrby(count, f"{installation}\n{old.kind}", -1)
                pipe.hincrby(count, f"{installation}\n{new.kind}", 1)
            self._place(pipe, due, field, new)
            return new

        return self._transaction(scope, body)

    def get(self, scope: Scope, name: str) -> Schedule | None:
        rows, due, _ = self._keys(self._bucket(scope.installation), scope.app)
        field = f"{scope.installation}\n{name}"
        with unavailable_as_503("schedule store"), self.client.pipeline(
                transaction=False) as pipe:
            pipe.hget(rows, field)
            pipe.zscore(due, field)
            row, score = pipe.execute()
        return None if row is None else self._decode(row, score)

    def delete(self, scope: Scope, name: str) -> bool:
        field = f"{scope.installation}\n{name}"

        def body(pipe: Any, keys: tuple[str, str, str], installation: str) -> bool:
            rows, due, count = keys
            old = self._read(pipe, rows, due, field)
            if old is None:
                return False
            pipe.multi()
            pipe.hdel(rows, field)
            pipe.zrem(due, field)
            pipe.hincrby(count, f"{installation}\n{old.kind}", -1)
            return True

        return self._transaction(scope, body)

    def set_paused(self, scope: Scope, name: str, paused: bool, now: float) -> Schedule | None:
        field = f"{scope.installation}\n{name}"

        def body(pipe: Any, keys: tuple[str, str, str], installation: str) -> Schedule | None:
            rows, due, _ = keys
            old = self._read(pipe, rows, due, field)
            if old is None:
                return None
            new = replace(old, paused=True) if paused else old.resumed(now)
            pipe.multi()
            pipe.hset(rows, field, self._encode(scope, new))
            self._place(pipe, due, field, new)
            return new

        return self._transaction(scope, body)

    def purge(self, scope: Scope) -> int:
        def body(pipe: Any, keys: tuple[str, str, str], installation: str) -> int:
            rows, due, count = keys
            match = _glob_escape(f"{installation}\n") + "*"
            fields = [_text(f) for f, _ in pipe.hscan_iter(rows, match=match, count=500)
                      if "\n" not in _text(f)[len(installation) + 1:]]
            pipe.multi()
            if fields:
                pipe.hdel(rows, *fields)
                pipe.zrem(due, *fields)
            pipe.hdel(count, f"{installation}\n{ONE_TIME}", f"{installation}\n{RECURRING}")
            return len(fields)

        return self._transaction(scope, body)

    def claim_due(self, now: float, limit: int,
                  apps: Collection[str] | None = None) -> list[Occurrence]:
        if limit <= 0:
            return []
        with unavailable_as_503("schedule store"):
            sets = [(bucket, app) for app in self._apps(apps) for bucket in range(self.buckets)]
            with self.client.pipeline(transaction=False) as pipe:
                for bucket, app in sets:
                    pipe.zrangebyscore(self._keys(bucket, app)[1], "-inf", now, start=0,
                                       num=limit, withscores=True)
                peeked = pipe.execute()
            candidates = heapq.nsmallest(limit, ((score, _text(field), where)
                                                 for where, found in zip(sets, peeked,
                                                                         strict=True)
                                                 for field, score in found))
            chosen: dict[tuple[int, str], list[str]] = {}
            for _, field, where in candidates:
                chosen.setdefault(where, []).append(field)
            claimed: list[Occurrence] = []
            for (bucket, app), fields in chosen.items():
                flat = self._claim(keys=list(self._keys(bucket, app)),
                                   args=[repr(now), *fields])
                for i in range(0, len(flat), 4):
                    row = json.loads(flat[i + 1])
                    claimed.append(Occurrence(row["app"], row["account_id"], row["name"],
                                              json.loads(row["data"]), int(_text(flat[i + 2])),
                                              int(_text(flat[i + 3]))))
        claimed.sort(key=lambda o: (o.due, o.key))
        return claimed

    def next_due(self, apps: Collection[str] | None = None) -> float | None:
        with unavailable_as_503("schedule store"):
            names = self._apps(apps)
            with self.client.pipeline(transaction=False) as pipe:
                for app in names:
                    for bucket in range(self.buckets):
                        pipe.zrange(self._keys(bucket, app)[1], 0, 0, withscores=True)
                firsts = [found[0][1] for found in pipe.execute() if found]
        return min(firsts, default=None)
