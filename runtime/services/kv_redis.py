"""RedisKV: the key-value store's backend on Redis, for a cluster of engines. Keys and values
come from handlers (untrusted), already checked by KVStore; here they are only data.

    store = KVStore(RedisKV(redis.Redis.from_url("redis://127.0.0.1:6379/0")))

Layout, per installation (the host builds `installation` from the worker's binding):

    {prefix}kv:{<installation>}        hash  handler key -> compact JSON text
    {prefix}kv:{<installation>}:exp    zset  handler key -> expires_at (wall-clock seconds)

A handler's key is only ever a hash *field*, never part of a Redis key name and never a
pattern, so no key string can reach another installation's entries (the SQLite backend's
two-column rule). Both keys of an installation share the `{installation}` hash tag, so each
operation is one atomic Lua script on one slot (Redis Cluster ready). Expiry follows the
caller's `now` exactly as SQLite does (an entry whose expires_at <= now is absent, deleted
when touched or swept); Redis' own TTLs are not used, since they cannot expire single hash
fields before Redis 7.4 and would not follow an injected clock. `update` is the only
read-modify-write with Python in the middle (the change is KVStore's): WATCH/MULTI, retried
when another writer got in first. Connection failures become a retryable ServiceError 503.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from handlerbox.runtime.services.base import ServiceError
from handlerbox.runtime.services.kv import Change, Condition, KVBackend

MAX_UPDATE_RACES = 100
"""An update that loses this many WATCH races in a row is answered 503 (retry later)."""

# KEYS[1] entries hash, KEYS[2] expiry zset. A live entry: present, and no expiry <= now.
_LIVE = """
local function live(key, now)
    local value = redis.call('HGET', KEYS[1], key)
    if not value then return false end
    local at = redis.call('ZSCORE', KEYS[2], key)
    if at and tonumber(at) <= now then
        redis.call('HDEL', KEYS[1], key)
        redis.call('ZREM', KEYS[2], key)
        return false
    end
    return value
end
"""
_GET = _LIVE + "return live(ARGV[1], tonumber(ARGV[2]))"
_SET = _LIVE + """
local key, value, expires, now, condition = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if condition ~= '' then
    local present = live(key, now) ~= false
    if present ~= (condition == 'exists') then return 0 end
end
redis.call('HSET', KEYS[1], key, value)
if expires == '' then
    redis.call('ZREM', KEYS[2], key)
else
    redis.call('ZADD', KEYS[2], expires, key)
end
return 1
"""
_DELETE = _LIVE + """
local present = live(ARGV[1], tonumber(ARGV[2])) ~= false
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return present and 1 or 0
"""
_PURGE = """
local count = redis.call('HLEN', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return count
"""
_SWEEP = """
local gone = 0
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
    gone = gone + redis.call('HDEL', KEYS[1], key)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
return gone
"""


@contextmanager
def unavailable_as_503(what: str) -> Iterator[None]:
    """Redis down or too slow is the host's problem: the handler gets a retryable 503
    without the connection's details."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError):
        raise ServiceError(503, f"the {what} is unavailable; retry the operation later") \
            from None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisKV(KVBackend):
    """The KVBackend protocol over one Redis (or Redis Cluster) client; thread-safe (the
    client's connection pool). `prefix` namespaces every key (one Redis, many deployments
    or tests)."""

    def __init__(self, client: redis.Redis, prefix: str = "hb:") -> None:
        self.client, self.prefix = client, prefix
        self._get = client.register_script(_GET)
        self._set = client.register_script(_SET)
        self._delete = client.register_script(_DELETE)
        self._purge = client.register_script(_PURGE)
        self._sweep = client.register_script(_SWEEP)

    @classmethod
    def from_url(cls, url: str, prefix: str = "hb:") -> RedisKV:
        return cls(redis.Redis.from_url(url), prefix)

    def _keys(self, installation: str) -> list[str]:
        entries = f"{self.prefix}kv:{{{installation}}}"
        return [entries, entries + ":exp"]

    def get(self, installation: str, key: str, now: float) -> str | None:
        with unavailable_as_503("key-value store"):
            found = self._get(keys=self._keys(installation), args=[key, repr(now)])
        return None if found is None else _text(found)

    def set(self, installation: str, key: str, value: str, expires_at: float | None,
            now: float, condition: Condition = None) -> bool:
        args = [key, value, "" if expires_at is None else repr(expires_at), repr(now),
                condition or ""]
        with unavailable_as_503("key-value store"):
            return bool(self._set(keys=self._keys(installation), args=args))

    def delete(self, installation: str, key: str, now: float) -> bool:
        with unavailable_as_503("key-value store"):
            return bool(self._delete(keys=self._keys(installation), args=[key, repr(now)]))

    def update(self, installation: str, key: str, now: float, change: Change) -> str | None:
        entries, expiry = self._keys(installation)
        with unavailable_as_503("key-value store"), self.client.pipeline() as transaction:
            pipe: Any = transaction  # redis-py's pipeline methods are untyped
            for _ in range(MAX_UPDATE_RACES):
                try:
                    pipe.watch(entries, expiry)
                    old, at = pipe.hget(entries, key), pipe.zscore(expiry, key)
                    if old is None or (at is not None and float(at) <= now):
                        pipe.unwatch()
                        return None
                    new = change(_text(old))  # may raise ServiceError: nothing written
                    pipe.multi()
                    pipe.hset(entries, key, new)
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue
        raise ServiceError(503, "the key-value store is busy with writes to this "
                                "installation; retry the operation later")

    def purge(self, installation: str) -> int:
        with unavailable_as_503("key-value store"):
            return int(self._purge(keys=self._keys(installation)))

    def sweep(self, now: float) -> int:
        """Every installation's expired entries: SCAN finds the expiry sets (our prefix
        only), then one script per installation removes what is due."""
        pattern = _glob_escape(f"{self.prefix}kv:{{") + "*}:exp"
        gone = 0
        with unavailable_as_503("key-value store"):
            for name in self.client.scan_iter(match=pattern, count=500, _type="zset"):
                expiry = _text(name)
                gone += int(self._sweep(keys=[expiry.removesuffix(":exp"), expiry],
                                        args=[repr(now)]))
        return gone
