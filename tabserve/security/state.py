"""The auth state store: login throttle counters and marks with an expiry, revoked tokens
among them (``TABSERVE_STATE_URL``).

Two backends behind one interface, :class:`StateStore`:

- ``memory://`` (the embedded default): in this worker process only. With several
  workers or replicas each keeps its own counters and its own revocations, so a limit
  of N failures is N per worker, and a logout is only seen by the worker that served it.
- ``redis://host:port/db`` (``rediss://`` for TLS): one store shared by every worker of
  every replica, so limits hold across all of them and a revocation is seen everywhere.

Throttling uses the ``limits`` library's moving window (its memory and Redis storages);
``hit`` checks and counts in one atomic step, so concurrent attempts cannot all slip
under the limit. Revocations are keys with an expiry (Redis ``SET key 1 EX ttl``; in
memory a dict of expiry times), kept exactly as long as the revoked token could still be
presented. Both are bounded in memory: the memory backend caps the number of keys it
tracks (the oldest are dropped first), and Redis expires every key with its window or
token (cap the server itself with ``maxmemory``).

Nothing connects at import or construction: connections are opened on first use, in
the event loop of the worker that uses them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger("tabserve.state")

MEMORY_URL = "memory://"
REDIS_SCHEMES = ("redis", "rediss")
KEY_PREFIX = "tabserve"
# Per worker, memory backend: beyond this many tracked throttle keys (or revoked ids)
# the oldest go first. 100,000 keys cost a few tens of MiB at most.
DEFAULT_MAX_KEYS = 100_000


class StateStoreError(RuntimeError):
    """The state store cannot be reached or used (e.g. Redis is down)."""


@dataclass(frozen=True)
class Limit:
    """A moving-window limit: at most ``amount`` hits per ``window_s`` seconds.

    Attributes:
        name: what is counted (part of the storage key, e.g. ``login-user``).
        amount: hits allowed in the window.
        window_s: length of the moving window in seconds.
    """

    name: str
    amount: int
    window_s: int

    def item(self) -> Any:
        """The ``limits`` rate-limit item of this limit."""
        from limits import RateLimitItemPerSecond

        return RateLimitItemPerSecond(self.amount, self.window_s, namespace=self.name)


def hashed(*parts: str) -> str:
    """A fixed-length storage key for ``parts``: no raw user name or address is stored,
    and no separator inside a part can make two different keys collide."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:32]


def redacted(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class StateStore(Protocol):
    """Throttle counters and expiring marks (revoked token ids...), shared as widely as the
    backend allows."""

    @property
    def shared(self) -> bool:
        """Whether every worker and replica sees the same state (Redis), not one worker."""

    @property
    def description(self) -> str:
        """The backend, for logs (no password)."""

    async def hit(self, limit: Limit, key: str) -> bool:
        """Count one hit against ``key``; False (and nothing counted) if over the limit."""

    async def test(self, limit: Limit, key: str) -> bool:
        """Whether one more hit would be allowed now (counts nothing)."""

    async def retry_after(self, limit: Limit, key: str) -> int:
        """Seconds until ``key`` is allowed another hit (at least 1)."""

    async def clear(self, limit: Limit, key: str) -> None:
        """Forget every hit of ``key``."""

    async def mark(self, kind: str, ident: str, ttl_s: int, value: float = 1.0) -> None:
        """Record ``value`` for ``ident`` of ``kind`` for ``ttl_s`` seconds (a revoked token
        id or subject, an upload of a session, a network a user logged in from)."""

    async def marked(self, kind: str, ident: str) -> float | None:
        """The value recorded for ``ident`` of ``kind``, or None (never, or expired)."""

    async def marked_many(self, keys: list[tuple[str, str]]) -> list[float | None]:
        """:meth:`marked` for several (kind, ident) pairs at once (one round trip)."""

    async def aclose(self) -> None:
        """Close connections (nothing to do in memory)."""


class _LimitsStore:
    """The throttle half, on a ``limits`` async storage with the moving-window strategy."""

    def __init__(self, storage: Any) -> None:
        from limits.aio.strategies import MovingWindowRateLimiter

        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)

    async def _hit(self, limit: Limit, key: str) -> bool:
        return bool(await self._limiter.hit(limit.item(), key))

    async def _test(self, limit: Limit, key: str) -> bool:
        return bool(await self._limiter.test(limit.item(), key))

    async def _retry_after(self, limit: Limit, key: str) -> int:
        stats = await self._limiter.get_window_stats(limit.item(), key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def _clear(self, limit: Limit, key: str) -> None:
        await self._limiter.clear(limit.item(), key)


class MemoryStateStore(_LimitsStore):
    """Per-worker state: ``limits``' memory storage, and a dict of revocations.

    Args:
        max_keys: most throttle keys, and most revoked ids, tracked at once.
        clock: wall-clock time source (seconds), for the revocations' expiry.
    """

    def __init__(
        self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], float] = time.time
    ) -> None:
        from limits.aio.storage import MemoryStorage

        super().__init__(MemoryStorage())
        self.max_keys = max_keys
        self._clock = clock
        # (limit name, key) -> (limit, time of its last hit), oldest first: what goes first.
        self._tracked: OrderedDict[tuple[str, str], tuple[Limit, float]] = OrderedDict()
        self._revoked: dict[tuple[str, str], tuple[float, float]] = {}  # -> (expiry, value)

    @property
    def shared(self) -> bool:
        return False

    @property
    def description(self) -> str:
        return f"{MEMORY_URL} (this worker only)"

    @property
    def tracked_keys(self) -> int:
        """How many throttle keys are tracked now."""
        return len(self._tracked)

    async def _forget_old(self, now: float) -> None:
        # Keys whose last hit left its window hold nothing any more; beyond the cap the
        # oldest go too (an attacker cycling names can only push out idle keys first).
        while self._tracked:
            tracked, (limit, last) = next(iter(self._tracked.items()))
            if last > now - limit.window_s and len(self._tracked) <= self.max_keys:
                break
            del self._tracked[tracked]
            await self._clear(limit, tracked[1])

    async def hit(self, limit: Limit, key: str) -> bool:
        now = self._clock()
        allowed = await self._hit(limit, key)
        self._tracked[(limit.name, key)] = (limit, now)
        self._tracked.move_to_end((limit.name, key))
        await self._forget_old(now)
        return allowed

    async def test(self, limit: Limit, key: str) -> bool:
        return await self._test(limit, key)

    async def retry_after(self, limit: Limit, key: str) -> int:
        return await self._retry_after(limit, key)

    async def clear(self, limit: Limit, key: str) -> None:
        self._tracked.pop((limit.name, key), None)
        await self._clear(limit, key)

    async def mark(self, kind: str, ident: str, ttl_s: int, value: float = 1.0) -> None:
        now = self._clock()
        if len(self._revoked) >= self.max_keys:
            self._revoked = {k: v for k, v in self._revoked.items() if v[0] > now}
        if len(self._revoked) >= self.max_keys:
            # Drop the revocation that would have expired first: the least harm.
            soonest = min(self._revoked, key=lambda k: self._revoked[k][0])
            del self._revoked[soonest]
            logger.warning("revocation store full (%d ids): dropped the oldest", self.max_keys)
        self._revoked[(kind, ident)] = (now + ttl_s, value)

    async def marked(self, kind: str, ident: str) -> float | None:
        entry = self._revoked.get((kind, ident))
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._revoked.pop((kind, ident), None)
            return None
        return entry[1]

    async def marked_many(self, keys: list[tuple[str, str]]) -> list[float | None]:
        return [await self.marked(kind, ident) for kind, ident in keys]

    async def aclose(self) -> None:
        return None


class RedisStateStore(_LimitsStore):
    """State shared through one Redis server by every worker and replica.

    Args:
        url: ``redis://[:password@]host:port/db`` or ``rediss://…``.
        timeout_s: connect and command timeout; a Redis that does not answer in time
            is an error (the caller refuses the request), never a silent pass.
    """

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        from limits.aio.storage import RedisStorage

        super().__init__(
            RedisStorage(
                "async+" + url,
                implementation="redispy",
                key_prefix=f"{KEY_PREFIX}:throttle",
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
            )
        )
        self.url = url
        self.timeout_s = timeout_s
        self._client: Any = None

    @property
    def shared(self) -> bool:
        return True

    @property
    def description(self) -> str:
        return redacted(self.url)

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
            )
        return self._client

    async def _guarded(self, call: Any) -> Any:
        import redis

        try:
            return await call
        except (redis.RedisError, OSError) as exc:
            raise StateStoreError(f"state store {self.description}: {exc}") from None

    async def hit(self, limit: Limit, key: str) -> bool:
        return bool(await self._guarded(self._hit(limit, key)))

    async def test(self, limit: Limit, key: str) -> bool:
        return bool(await self._guarded(self._test(limit, key)))

    async def retry_after(self, limit: Limit, key: str) -> int:
        return int(await self._guarded(self._retry_after(limit, key)))

    async def clear(self, limit: Limit, key: str) -> None:
        await self._guarded(self._clear(limit, key))

    @staticmethod
    def _key(kind: str, ident: str) -> str:
        return f"{KEY_PREFIX}:revoked:{kind}:{ident}"

    async def mark(self, kind: str, ident: str, ttl_s: int, value: float = 1.0) -> None:
        await self._guarded(self._redis().set(self._key(kind, ident), repr(value), ex=ttl_s))

    async def marked(self, kind: str, ident: str) -> float | None:
        found = await self._guarded(self._redis().get(self._key(kind, ident)))
        return None if found is None else float(found)

    async def marked_many(self, keys: list[tuple[str, str]]) -> list[float | None]:
        found = await self._guarded(self._redis().mget([self._key(k, i) for k, i in keys]))
        return [None if value is None else float(value) for value in found]

    async def ping(self) -> None:
        """Raise :class:`StateStoreError` unless Redis answers."""
        await self._guarded(self._redis().ping())

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def check_state_url(url: str) -> str:
    """Return ``url`` if it names a supported backend.

    Raises:
        ValueError: for any other scheme.
    """
    scheme = urlsplit(url).scheme
    if url == MEMORY_URL or (scheme in REDIS_SCHEMES and urlsplit(url).hostname):
        return url
    raise ValueError(
        f"unsupported state store {redacted(url)!r}: use {MEMORY_URL} (one worker) "
        "or redis://host:port/db (several workers and replicas)"
    )


def open_state(url: str, max_keys: int = DEFAULT_MAX_KEYS) -> StateStore:
    """The store named by ``url`` (``TABSERVE_STATE_URL``); connects on first use.

    Raises:
        ValueError: for an unsupported URL.
    """
    check_state_url(url)
    if url == MEMORY_URL:
        return MemoryStateStore(max_keys)
    return RedisStateStore(url)


__all__ = [
    "MEMORY_URL",
    "Limit",
    "MemoryStateStore",
    "RedisStateStore",
    "StateStore",
    "StateStoreError",
    "check_state_url",
    "hashed",
    "open_state",
    "redacted",
]
