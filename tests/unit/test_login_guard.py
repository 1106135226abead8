"""The login guard (throttle counted before the hash, concurrency bound) and the memory
state store it runs on (moving windows, bounded keys, revocations that expire)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

from tabserve.core.errors import (
    InvalidCredentialsError,
    ServerBusyError,
    TooManyRequestsError,
)
from tabserve.security.login_guard import CLIENT_FAILURES_FACTOR, LoginGuard
from tabserve.security.state import Limit, MemoryStateStore, check_state_url, hashed, redacted
from tabserve.serving.settings import Settings


class Outcomes:
    """Stands in for the Prometheus counters: records each outcome."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def login(self, outcome: str) -> None:
        self.counts[outcome] += 1


class SlowCheck:
    """A password check that takes ``seconds`` and records how many ran at once."""

    def __init__(self, seconds: float, right: str = "right") -> None:
        self.seconds = seconds
        self.right = right
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, password: str) -> Any:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return {"user": "alice"} if password == self.right else None


def _guard(**settings: Any) -> tuple[LoginGuard, Outcomes]:
    outcomes = Outcomes()
    values = {"login_max_failures": 5, "login_window_s": 2, **settings}
    return LoginGuard(Settings(**values), MemoryStateStore(), metrics=outcomes), outcomes


async def _attempt(guard: LoginGuard, check: SlowCheck, password: str, client: str) -> str:
    try:
        await guard.check("alice", client, lambda: check(password))
    except ServerBusyError:
        return "busy"
    except TooManyRequestsError as exc:
        return "throttled" if int(exc.headers["Retry-After"]) >= 1 else "no Retry-After"
    except InvalidCredentialsError:
        return "failure"
    return "success"


def test_concurrent_wrong_passwords_reach_the_hash_at_most_max_failures_times() -> None:
    guard, outcomes = _guard(login_concurrency=4, login_queue_timeout_s=10)
    check = SlowCheck(0.05)

    async def run() -> list[str]:
        attempts = [_attempt(guard, check, f"guess-{i}", "203.0.113.9") for i in range(20)]
        return list(await asyncio.gather(*attempts))

    results = asyncio.run(run())
    assert check.calls == 5, results  # counted before the hash: no race past the limit
    assert Counter(results) == {"failure": 5, "throttled": 15}
    assert outcomes.counts == {"failure": 5, "throttled": 15}
    assert check.most_at_once <= 4


def test_the_right_password_is_throttled_until_the_window_passes() -> None:
    guard, _ = _guard(login_window_s=1)
    check = SlowCheck(0)

    async def run() -> list[str]:
        results = [await _attempt(guard, check, "wrong", "198.51.100.1") for _ in range(5)]
        results.append(await _attempt(guard, check, "right", "198.51.100.1"))
        # Another client is not locked out by this one's failures.
        results.append(await _attempt(guard, check, "right", "198.51.100.2"))
        await asyncio.sleep(1.1)
        results.append(await _attempt(guard, check, "right", "198.51.100.1"))
        return results

    assert asyncio.run(run()) == ["failure"] * 5 + ["throttled", "success", "success"]


def test_a_success_clears_the_user_count_so_typos_do_not_add_up() -> None:
    guard, _ = _guard()
    check = SlowCheck(0)

    async def run() -> list[str]:
        results = []
        for _ in range(3):
            results += [await _attempt(guard, check, "typo", "192.0.2.1") for _ in range(4)]
            results.append(await _attempt(guard, check, "right", "192.0.2.1"))
        return results

    assert asyncio.run(run()) == (["failure"] * 4 + ["success"]) * 3


def test_a_client_cycling_user_names_is_throttled_per_client() -> None:
    guard, _ = _guard(login_window_s=30)
    check = SlowCheck(0)
    limit = 5 * CLIENT_FAILURES_FACTOR

    async def run() -> list[str]:
        results = []
        for i in range(limit + 5):
            try:
                await guard.check(f"user-{i}", "192.0.2.50", lambda: check("x"))
            except TooManyRequestsError:
                results.append("throttled")
            except InvalidCredentialsError:
                results.append("failure")
        return results

    results = asyncio.run(run())
    assert results == ["failure"] * limit + ["throttled"] * 5
    assert check.calls == limit


def test_logins_beyond_the_concurrency_bound_wait_then_are_refused_as_busy() -> None:
    guard, outcomes = _guard(login_concurrency=1, login_queue_timeout_s=0.2)
    check = SlowCheck(0.5)

    async def run() -> list[str]:
        # Different clients and users: no throttle, only the bound refuses.
        return list(
            await asyncio.gather(
                *(guard.check(f"u{i}", f"192.0.2.{i}", lambda: check("right")) for i in range(4)),
                return_exceptions=True,
            )
        )

    results = asyncio.run(run())
    busy = [r for r in results if isinstance(r, ServerBusyError)]
    assert len(busy) == 3 and check.calls == 1 and check.most_at_once == 1
    assert busy[0].status == 429 and busy[0].code == "busy"
    assert busy[0].headers["Retry-After"] == "1"
    assert outcomes.counts == {"success": 1, "busy": 3}


def test_memory_store_caps_the_keys_it_tracks() -> None:
    store = MemoryStateStore(max_keys=100)
    limit = Limit("login-user", 3, 60)

    async def run() -> None:
        for i in range(1000):
            assert await store.hit(limit, hashed(f"user-{i}", "192.0.2.1"))
        assert store.tracked_keys == 100
        # The newest keys are still counted.
        newest = hashed("user-999", "192.0.2.1")
        assert await store.hit(limit, newest) and await store.hit(limit, newest)
        assert not await store.hit(limit, newest)

    asyncio.run(run())


def test_memory_store_forgets_keys_once_their_window_passed() -> None:
    now = [1000.0]
    store = MemoryStateStore(clock=lambda: now[0])
    limit = Limit("login-user", 3, 60)

    async def run() -> None:
        for i in range(50):
            await store.hit(limit, f"k{i}")
        assert store.tracked_keys == 50
        now[0] += 61
        await store.hit(limit, "fresh")
        assert store.tracked_keys == 1

    asyncio.run(run())


def test_memory_revocations_expire_and_are_bounded() -> None:
    now = [1000.0]
    store = MemoryStateStore(max_keys=100, clock=lambda: now[0])

    async def run() -> None:
        await store.mark("jti", "a", ttl_s=10)
        await store.mark("sub", "bob", ttl_s=100, value=999.5)
        assert await store.marked("jti", "a") == 1.0
        assert await store.marked("sub", "bob") == 999.5
        assert await store.marked("jti", "b") is None
        now[0] += 11
        assert await store.marked("jti", "a") is None  # expired with the token
        for i in range(500):
            await store.mark("jti", f"t{i}", ttl_s=50 + i)
        assert len(store._revoked) <= 100
        assert await store.marked("jti", "t499") is not None  # the longest-lived stay

    asyncio.run(run())


def test_state_urls_are_checked_and_passwords_redacted() -> None:
    assert check_state_url("memory://") == "memory://"
    assert check_state_url("redis://redis:6379/0") == "redis://redis:6379/0"
    assert check_state_url("rediss://:pw@redis.example:6380/1")
    for bad in ("memcached://x", "redis://", "sqlite:///x.db", "memory"):
        with pytest.raises(ValueError, match="unsupported state store"):
            check_state_url(bad)
    assert redacted("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert "s3cret" not in redacted("rediss://user:s3cret@h/0")


def test_ipv6_clients_are_counted_by_their_slash_64() -> None:
    from tabserve.security.login_guard import client_network

    assert client_network("2001:db8:1:2:aaaa::1") == client_network("2001:db8:1:2:ffff::9")
    assert client_network("2001:db8:1:2::1") != client_network("2001:db8:1:3::1")
    assert client_network("2001:db8:1:2::1", ipv6_prefix=128) == "2001:db8:1:2::1/128"
    assert client_network("203.0.113.7") == "203.0.113.7"
    assert client_network("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_network("unknown") == "unknown"
    guard, _ = _guard(login_window_s=5)
    check = SlowCheck(0)

    async def run() -> list[str]:
        # Five guesses, each from another address of one /64: one budget, not five.
        results = [
            await _attempt(guard, check, "wrong", f"2001:db8:7:7::{i + 1:x}") for i in range(5)
        ]
        results.append(await _attempt(guard, check, "right", "2001:db8:7:7::99"))
        results.append(await _attempt(guard, check, "right", "2001:db8:7:8::1"))
        return results

    assert asyncio.run(run()) == ["failure"] * 5 + ["throttled", "success"]


def test_an_account_ceiling_holds_across_networks_but_not_for_the_owners_networks() -> None:
    """Guesses spread over many networks (one each, under every per-network limit) hit the
    account's ceiling; the owner's network, where they logged in before, still gets in,
    and a network never used waits for the window."""
    guard, outcomes = _guard(login_window_s=2, login_account_max_failures=8)
    check = SlowCheck(0)

    async def run() -> list[str]:
        owner = [await _attempt(guard, check, "right", "192.0.2.10")]  # the owner's network
        guesses = [await _attempt(guard, check, f"g{i}", f"198.51.100.{i}") for i in range(12)]
        after = [
            await _attempt(guard, check, "right", "192.0.2.10"),  # known: not locked out
            await _attempt(guard, check, "right", "203.0.113.50"),  # new: must wait
        ]
        await asyncio.sleep(2.1)
        after.append(await _attempt(guard, check, "right", "203.0.113.50"))
        return owner + guesses + after

    results = asyncio.run(run())
    assert results[0] == "success"
    assert results[1:13] == ["failure"] * 8 + ["throttled"] * 4
    assert results[13:] == ["success", "throttled", "success"]
    assert check.calls == 1 + 8 + 1 + 1  # nothing over the ceiling reached the hash
    assert outcomes.counts["throttled"] == 5
