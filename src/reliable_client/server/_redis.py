"""The Redis store: one record hash per key, every step one Lua script.

Redis runs a script atomically, so "read the record, decide, write the claim"
cannot interleave with another server's claim of the same key.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from ._stores import (
    Claimed,
    ClaimResult,
    Clock,
    Completed,
    IdempotencyStore,
    InFlight,
    Mismatch,
    StoredResponse,
    new_token,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore"]

# Fields: fp (fingerprint), token (while in flight), status/headers/body (once
# completed), exp (lease end or expiry, by the store's clock).  Redis' own TTL
# (PEXPIRE) only collects garbage; decisions compare ``exp`` with ARGV now.
_CLAIM = """
local r = redis.call('HMGET', KEYS[1],
                      'fp', 'token', 'status', 'headers', 'body', 'exp')
if r[6] and tonumber(r[6]) > tonumber(ARGV[3]) then
  if r[2] == ARGV[2] then return {'claimed'} end
  if r[1] ~= ARGV[1] then return {'mismatch'} end
  if r[3] then return {'done', r[3], r[4], r[5]} end
  return {'busy', r[6]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'token', ARGV[2], 'exp', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'claimed'}
"""

_COMPLETE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'token')
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'headers', ARGV[3], 'body', ARGV[4],
           'exp', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

_EXTEND = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'exp', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# Redis keeps a record this much longer than its logical end (milliseconds),
# so clocks a little apart never see a record vanish before it expires.
_GRACE_MS = 5_000


class RedisStore(IdempotencyStore):
    """Records in Redis, shared by a fleet of servers.

    Args:
        url: a ``redis://`` URL; default ``redis://127.0.0.1:6379/0``.  The
            client built from it fails fast (1 s connect timeout, 2 s socket
            timeout, one reconnect attempt) so a Redis outage becomes a quick
            503, not a hung request.
        client: a ``redis.asyncio.Redis`` of your own instead of ``url``
            (it must not decode responses: bodies are bytes).
        prefix: prepended to every Redis key; default ``"idempotency:"``.
        clock: ``time.time`` by default (seconds since the epoch); the
            servers of a fleet need clocks in sync (NTP) for leases to agree.

    Needs the ``redis`` extra: ``pip install "reliable-client[redis]"``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = "idempotency:",
        clock: Clock = time.time,
    ) -> None:
        if url is not None and client is not None:
            raise TypeError("RedisStore: pass url or client, not both")
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as exc:  # pragma: no cover - the extra is installed
            raise ImportError(
                "RedisStore needs the redis package:"
                ' pip install "reliable-client[redis]"'
            ) from exc
        if client is None:
            client = aioredis.Redis.from_url(
                url or "redis://127.0.0.1:6379/0",
                socket_connect_timeout=1.0,
                socket_timeout=2.0,
                retry=Retry(NoBackoff(), 1),
            )
            self._owns_client = True
        else:
            self._owns_client = False
            if client.connection_pool.connection_kwargs.get("decode_responses"):
                raise ValueError(
                    "RedisStore: the client must have decode_responses=False"
                )
        self.client = client
        self._prefix = prefix
        self._clock = clock
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)

    async def claim(self, key: str, fingerprint: str, *, lease: float) -> ClaimResult:
        # The token is made here, so a script retried after a lost reply
        # recognises its own claim instead of reporting it in flight.
        token = new_token()
        now = self._clock()
        reply: list[Any] = await self._claim(
            keys=[self._prefix + key],
            args=[fingerprint, token, repr(now), repr(now + lease), _ttl_ms(lease)],
        )
        verdict = bytes(reply[0])
        if verdict == b"claimed":
            return Claimed(token)
        if verdict == b"mismatch":
            return Mismatch()
        if verdict == b"busy":
            return InFlight(max(float(reply[1]) - now, 0.0))
        status, headers, body = reply[1:]
        return Completed(
            StoredResponse.from_parts(int(status), bytes(headers).decode(), body)
        )

    async def complete(
        self, key: str, token: str, response: StoredResponse, *, expiry: float
    ) -> bool:
        done = await self._complete(
            keys=[self._prefix + key],
            args=[
                token,
                response.status,
                response.headers_json(),
                response.body,
                repr(self._clock() + expiry),
                _ttl_ms(expiry),
            ],
        )
        return bool(done)

    async def release(self, key: str, token: str) -> bool:
        return bool(await self._release(keys=[self._prefix + key], args=[token]))

    async def extend(self, key: str, token: str, *, lease: float) -> bool:
        end = repr(self._clock() + lease)
        done = await self._extend(
            keys=[self._prefix + key], args=[token, end, _ttl_ms(lease)]
        )
        return bool(done)

    async def aclose(self) -> None:
        """Close the client if this store built it from a URL."""
        if self._owns_client:
            await self.client.aclose()


def _ttl_ms(seconds: float) -> int:
    return math.ceil(seconds * 1000) + _GRACE_MS
