"""The Redis state store against a real ``redis-server``: the same behaviour as in
memory, keys that expire with their window or token, and a Redis that is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tabserve.security.login_guard import LoginGuard
from tabserve.security.state import Limit, RedisStateStore, StateStoreError, hashed
from tabserve.serving.settings import Settings
from tests.support import free_port, redis_server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def test_throttle_counts_atomically_and_expires_with_its_window(redis_url: str) -> None:
    limit = Limit("login-user", 3, 2)
    key = hashed("alice", "192.0.2.1")

    client = redis.Redis.from_url(redis_url)

    async def run() -> tuple[list[bool], int, bool, bool]:
        store = RedisStateStore(redis_url)
        try:
            await store.clear(limit, key)
            hits = list(await asyncio.gather(*(store.hit(limit, key) for _ in range(10))))
            keys = client.keys("tabserve:throttle*")
            assert keys and all(0 < client.ttl(k) <= 2 for k in keys)  # gone with the window
            assert not any(b"alice" in k for k in client.keys("*"))  # names are hashed
            retry = await store.retry_after(limit, key)
            blocked = await store.test(limit, key)
            await asyncio.sleep(2.1)
            return hits, retry, blocked, await store.test(limit, key)
        finally:
            await store.aclose()

    hits, retry, blocked, later = asyncio.run(run())
    assert hits.count(True) == 3  # ten at once: exactly the limit passes
    assert 1 <= retry <= 2 and not blocked and later
    client = redis.Redis.from_url(redis_url)
    keys = client.keys("tabserve:throttle*")
    assert (keys and all(0 < client.ttl(k) <= 2 for k in keys)) or not keys
    assert not any(b"alice" in k for k in client.keys("*"))  # names are hashed


def test_revocations_are_shared_and_expire_with_the_token(redis_url: str) -> None:
    async def run() -> tuple[float | None, float | None, float | None]:
        writer, reader = RedisStateStore(redis_url), RedisStateStore(redis_url)
        try:
            await writer.mark("jti", "abc123", ttl_s=1)
            await writer.mark("sub", "bob", ttl_s=60, value=1234.5)
            seen = await reader.marked("jti", "abc123")
            sub = await reader.marked("sub", "bob")
            both = await reader.marked_many([("jti", "abc123"), ("sub", "nobody")])
            assert both == [1.0, None]
            await asyncio.sleep(1.2)
            return seen, sub, await reader.marked("jti", "abc123")
        finally:
            await writer.aclose()
            await reader.aclose()

    seen, sub, expired = asyncio.run(run())
    assert seen == 1.0 and sub == 1234.5 and expired is None
    ttl = redis.Redis.from_url(redis_url).ttl("tabserve:revoked:sub:bob")
    assert 0 < ttl <= 60


def test_a_redis_that_is_down_fails_closed(tmp_path: Path) -> None:
    store = RedisStateStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    guard = LoginGuard(Settings(), store)

    async def run() -> None:
        with pytest.raises(StateStoreError, match="state store"):
            await store.marked("jti", "x")
        started = time.monotonic()
        from tabserve.core.errors import NotReadyError

        with pytest.raises(NotReadyError):
            await guard.check("alice", "192.0.2.1", lambda: {"user": "alice"})
        assert time.monotonic() - started < 5
        await store.aclose()

    asyncio.run(run())
