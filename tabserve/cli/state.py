"""The auth state store from the command line: ``tabserve users remove`` and ``token revoke``
reach the service's store (Redis) to revoke what they must."""

from __future__ import annotations

from typing import Any

from tabserve.core.config import SettingsError
from tabserve.security.settings import SecuritySettings
from tabserve.security.state import StateStoreError, open_state

MEMORY_NOTE = (
    "TABSERVE_STATE_URL is memory://: each running worker keeps its revocations in its "
    "own memory, out of this command's reach"
)


async def with_store(settings: SecuritySettings, action: Any) -> None:
    store = open_state(settings.state_url, settings.state_max_keys)
    try:
        await action(store)
    except StateStoreError as exc:
        raise SettingsError(str(exc)) from None
    finally:
        await store.aclose()
