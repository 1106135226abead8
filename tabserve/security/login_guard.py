"""The defences around a password check: throttle, concurrency bound and their metrics.

Every login (``POST /auth/token`` and the UI's form) goes through :meth:`LoginGuard.check`:

1. **Throttle, refused early.** A (user name, client) pair or a client that is already
   over its limit is refused at once (429 with ``Retry-After``), before it waits for
   anything. Limits: ``TABSERVE_LOGIN_MAX_FAILURES`` per user name and client, ten times
   that per client whatever the names, in a moving window of ``TABSERVE_LOGIN_WINDOW_S``.
   A client is its network, not its exact address: an IPv4 address, or its IPv6 /64
   (``TABSERVE_LOGIN_IPV6_PREFIX``), since one host usually holds a whole /64.
1b. **A ceiling per account, across all networks.** At most
   ``TABSERVE_LOGIN_ACCOUNT_MAX_FAILURES`` failures per user name in the window, whatever
   the networks they come from (a botnet, or a proxy range trusted too widely, gets no
   fresh budget). Past it, the account is closed to *new* networks until the window has
   passed (429 with ``Retry-After``); the networks the account logged in from
   successfully in the last ``TABSERVE_LOGIN_KNOWN_NETWORK_DAYS`` days are exempt. So an
   attacker can delay the owner only on a network the owner never used (by at most the
   window, renewed as long as the attack goes on), and can never lock them out of one
   they did: a delay for the unknown, no denial for the known.
2. **Bounded concurrency.** At most ``TABSERVE_LOGIN_CONCURRENCY`` verifications run at
   once in a worker, on as many dedicated threads (so argon2's memory is reused, not
   spread over every thread's malloc arena). Others wait up to
   ``TABSERVE_LOGIN_QUEUE_TIMEOUT_S``, then get 429 ``busy`` with ``Retry-After``: a flood
   costs at most ``concurrency x argon2 memory`` and leaves the other cores to predictions.
3. **Counted before the hash.** The attempt is counted against its (user, client) key in
   the same atomic step that checks the limit, before argon2 runs, so concurrent guesses
   cannot all pass the check: at most ``LOGIN_MAX_FAILURES`` of them reach the hash. A
   success clears that key. The per-client count is of failures (so that many people
   behind one address may all log in); it is checked again once a slot is taken and
   recorded after the hash, so it may overshoot by at most the verifications running
   at that moment (the bound above, per worker).

The counters live in the state store (:mod:`tabserve.security.state`): per worker with
``memory://``, shared by every worker and replica with Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tabserve.core.errors import (
    InvalidCredentialsError,
    NotReadyError,
    ServerBusyError,
    TooManyRequestsError,
)
from tabserve.core.log_text import printable
from tabserve.security.metrics import auth_metrics
from tabserve.security.settings import SecuritySettings
from tabserve.security.state import Limit, StateStore, StateStoreError, hashed

logger = logging.getLogger("tabserve.auth")

CLIENT_FAILURES_FACTOR = 10
USER_NAME_LOGGED = 64  # characters of a given user name written to the log (names are <= 64)
KNOWN_NETWORK = "login-known"
T = TypeVar("T")


def client_network(address: str, ipv6_prefix: int = 64) -> str:
    """The network a login is counted against: an IPv4 address itself, an IPv6 address's
    ``/ipv6_prefix``; anything else (a Unix socket, ``unknown``) as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
    return str(ip)


class LoginGuard:
    """Throttles, bounds and counts password checks for one worker.

    Args:
        settings: the limits (failures, window, concurrency, queue timeout).
        store: where the counters live.
        metrics: counts the outcomes (``tabserve_login_attempts_total``); the process's
            :func:`tabserve.security.metrics.auth_metrics` by default.
    """

    def __init__(self, settings: SecuritySettings, store: StateStore, metrics: Any = None) -> None:
        failures, window = settings.login_max_failures, settings.login_window_s
        self.user_limit = Limit("login-user", failures, window)
        self.client_limit = Limit("login-client", failures * CLIENT_FAILURES_FACTOR, window)
        self.account_limit = Limit("login-account", settings.login_account_max_failures, window)
        self.ipv6_prefix = settings.login_ipv6_prefix
        self.known_network_s = settings.login_known_network_days * 86_400
        self.store = store
        self.concurrency = settings.login_concurrency
        self.queue_timeout_s = settings.login_queue_timeout_s
        self._slots = asyncio.Semaphore(self.concurrency)
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="tabserve-login")
        self._metrics = metrics

    def _count(self, outcome: str) -> None:
        (self._metrics or auth_metrics()).login(outcome)

    async def _throttled(self, limit: Limit, key: str) -> TooManyRequestsError:
        self._count("throttled")
        retry = await self.store.retry_after(limit, key)
        return TooManyRequestsError("too many failed logins; retry later", retry_after_s=retry)

    async def check(self, username: str, client: str, verify: Callable[[], T | None]) -> T:
        """Run ``verify`` (the password check, blocking) behind the throttle and the bound.

        Args:
            username: the user name given (counted case-insensitively).
            client: the client's address (after trusted proxies).
            verify: returns the user's record for a right password, None otherwise.

        Returns:
            What ``verify`` returned.

        Raises:
            TooManyRequestsError: over a limit (``Retry-After``: when the window frees).
            ServerBusyError: no verification slot within the queue timeout.
            InvalidCredentialsError: unknown user or wrong password.
            NotReadyError: the state store cannot be reached (fail closed).
        """
        try:
            return await self._check(username, client, verify)
        except StateStoreError as exc:
            logger.error("login refused: %s", exc)
            raise NotReadyError("the login service is unavailable; retry shortly") from None

    async def _check(self, username: str, client: str, verify: Callable[[], T | None]) -> T:
        network = client_network(client, self.ipv6_prefix)
        account = username.lower()
        user_key, client_key = hashed(account, network), hashed(network)
        account_key, known_key = hashed(account), hashed(account, network)
        for limit, key in ((self.user_limit, user_key), (self.client_limit, client_key)):
            if not await self.store.test(limit, key):
                raise await self._throttled(limit, key)
        over_ceiling = not await self.store.test(self.account_limit, account_key)
        if over_ceiling and await self.store.marked(KNOWN_NETWORK, known_key) is None:
            logger.warning(
                "login for '%s' from %s refused: the account is over its failure ceiling "
                "and this network is not one it logged in from",
                printable(username, USER_NAME_LOGGED),
                printable(network, 64),
            )
            raise await self._throttled(self.account_limit, account_key)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout_s)
        except TimeoutError:
            self._count("busy")
            logger.warning(
                "login for '%s' from %s refused: every slot is busy",
                printable(username, USER_NAME_LOGGED),
                printable(client, 64),
            )
            raise ServerBusyError(retry_after_s=max(1, round(self.queue_timeout_s))) from None
        try:
            # Counted before the hash, atomically with the check (race-free).
            if not await self.store.hit(self.user_limit, user_key):
                raise await self._throttled(self.user_limit, user_key)
            # Failures of this client may have been recorded while this one waited.
            if not await self.store.test(self.client_limit, client_key):
                raise await self._throttled(self.client_limit, client_key)
            loop = asyncio.get_running_loop()
            record = await loop.run_in_executor(self._threads, verify)
        finally:
            self._slots.release()
        if record is None:
            self._count("failure")
            await self.store.hit(self.client_limit, client_key)
            await self.store.hit(self.account_limit, account_key)
            logger.warning(
                "failed login for user '%s' from %s",
                printable(username, USER_NAME_LOGGED),
                printable(client, 64),
            )
            raise InvalidCredentialsError()
        self._count("success")
        await self.store.clear(self.user_limit, user_key)
        await self.store.mark(KNOWN_NETWORK, known_key, self.known_network_s)
        return record

    def close(self) -> None:
        """Stop the verification threads."""
        with contextlib.suppress(RuntimeError):
            self._threads.shutdown(wait=False, cancel_futures=True)
