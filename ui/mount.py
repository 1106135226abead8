"""Mounting the Gradio UI inside the BentoML service at ``/ui``.

BentoML builds its ASGI app when ``service.py`` is imported, but the form needs the
served model's schema, which is only loaded when a worker starts. So the service
mounts a small Starlette app whose lifespan (run by BentoML right after the service
instance is created) builds the Gradio Blocks from the loaded predictor and mounts
them with Gradio's own :func:`gradio.mount_gradio_app` on a FastAPI host: nothing is
read or imported at import time, and the Gradio app sees the standard mount it is
tested with upstream. (BentoML's ``bentoml.gradio.mount_gradio_app`` skips part of
Gradio's set-up and does not render with every Gradio release.)

Authentication is not done here: :class:`tabserve.http.auth.AuthMiddleware`, with the
UI's sessions (``ui/session.py``), answers every ``/ui`` request without a valid session
before it reaches this app.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from tabserve.core.errors import NotFoundError, NotReadyError
from tabserve.core.predictor import Predictor
from tabserve.core.validation import RequestValidator
from tabserve.serving.heap import freeze_startup_heap
from tabserve.serving.monitor import Monitor
from tabserve.serving.settings import Settings
from ui.session import UI_PREFIX, is_ui_path

logger = logging.getLogger("tabserve.ui")


class UIServingState(Protocol):
    """What the UI needs from the loaded service instance."""

    @property
    def predictor(self) -> Predictor:
        """The loaded model."""

    @property
    def validator(self) -> RequestValidator:
        """The API's request validator."""

    @property
    def settings(self) -> Settings:
        """The worker's settings (limits)."""

    @property
    def monitor(self) -> Monitor:
        """The service's monitor (the UI's rows count there too)."""


class _PrefixRoute(BaseRoute):
    """Routes every path under ``prefix`` to ``app``, leaving the scope untouched."""

    def __init__(self, prefix: str, app: Callable[[Scope, Receive, Send], Any]) -> None:
        self.prefix = prefix
        self.app = app

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # HTTP only: Gradio has no websocket route, and the auth middleware checks HTTP.
        if scope["type"] == "http" and is_ui_path(scope["path"]):
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def build_host(serving: UIServingState) -> tuple[Any, Any]:
    """A FastAPI app with the Gradio UI of ``serving``'s model mounted at ``/ui``, and
    what its requests pass first (:mod:`ui.edge`, then :mod:`ui.guard`): ``(gate, host)``."""
    # Gradio reads these when imported: no telemetry, no start-up version check.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from fastapi import FastAPI

    from ui.app import SCORED_FILE_TTL_S, UILimits, build_blocks
    from ui.edge import UIEdge
    from ui.guard import UICallGuard, blocked_folders, blocks_events, enforce_upload_checks

    settings = serving.settings
    limits = UILimits(settings.ui_upload_limit_bytes, settings.ui_batch_max_rows)
    blocks = build_blocks(serving.predictor, serving.validator, limits, serving.monitor)
    blocks.queue(default_concurrency_limit=2)
    slow_queue_polling(blocks)
    theme = gr.themes.Default(
        primary_hue="orange",
        # System fonts: the default theme would fetch Google Fonts from the internet.
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
    )
    host = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    gr.mount_gradio_app(
        host,
        blocks,
        path=UI_PREFIX,
        # Gradio derives its public URL from each request's path when this is unset; for
        # plain HTTP event calls (the UI's events do not use the queue: ui/app.py) it then
        # drops the mount path from file links, so the mount path is given.
        root_path=UI_PREFIX,
        footer_links=["api", "settings"],
        run_history=False,
        max_file_size=limits.max_upload_bytes,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        theme=theme,
        css=_CSS,
        show_error=True,
        blocked_paths=blocked_folders(_app_folders(settings)),
    )
    enforce_upload_checks(blocks)
    gate = UICallGuard(
        host, UI_PREFIX, blocks_events(blocks), limits.max_upload_bytes, SCORED_FILE_TTL_S
    )
    return UIEdge(gate), host


def _app_folders(settings: Settings) -> list[str]:
    """The app's own folders, which no UI call may read: its code, the working directory,
    the BentoML store (models), the users file's and the secret's folders."""
    folders = [os.getcwd(), str(Path(__file__).resolve().parents[1])]
    folders.append(os.environ.get("BENTOML_HOME", str(Path.home() / "bentoml")))
    folders.append(str(settings.resolved_users_file.parent))
    return folders


# How often Gradio's queue loops look for work, in seconds: Gradio's own values before 6.0,
# which lowered them to 1 and 10 ms (gradio-app/gradio#12296; #12556 put Windows back).
QUEUE_POLL_S = 0.05
PROGRESS_POLL_S = 0.1


def slow_queue_polling(blocks: Any) -> bool:
    """Let Gradio's queue look for work every 50 ms instead of every millisecond.

    The UI's events do not use the queue (``queue=False``, ui/app.py), but Gradio starts
    its loops in every worker all the same, and they poll: one looks for queued events
    every 1 ms, one for progress updates every 10 ms. That woke an idle worker about 900
    times a second and cost it 4 % of a core (0.3 % with the UI off). The values are
    attributes of Gradio's ``Queue``; returns False, with a warning, where this Gradio
    release has none of that name (then the UI still works, and polls as Gradio does).
    """
    queue = getattr(blocks, "_queue", None)
    names = ("sleep_when_free", "progress_update_sleep_when_free")
    if queue is None or not all(hasattr(queue, name) for name in names):
        logger.warning("Gradio's queue has no %s: its polling interval is Gradio's", names)
        return False
    queue.sleep_when_free = QUEUE_POLL_S
    queue.progress_update_sleep_when_free = PROGRESS_POLL_S
    return True


_CSS = """
#ui-header { align-items: center; }
#ui-header .logout { float: right; font-size: 0.95rem; }
"""


def create_ui_app(state: Callable[[], UIServingState | None]) -> Starlette:
    """The ASGI app the service mounts at ``/``; it serves ``/ui`` once the model is loaded.

    Args:
        state: returns the loaded service instance (or None before it is ready).
    """
    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        serving = state()
        if serving is None:
            logger.error("the UI is not mounted: no loaded service instance")
            yield
            return
        if not serving.settings.ui_enabled:
            holder["disabled"] = True
            logger.info("the UI is disabled (TABSERVE_UI_ENABLED=false)")
            yield
            return
        gate, host = build_host(serving)
        async with host.router.lifespan_context(host):
            holder["host"] = gate
            freeze_startup_heap()  # Gradio's objects live as long as the worker
            logger.info("UI mounted at %s/", UI_PREFIX)
            try:
                yield
            finally:
                holder.clear()

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        host = holder.get("host")
        if host is None:
            if holder.get("disabled"):
                raise NotFoundError("the UI is disabled on this server (TABSERVE_UI_ENABLED)")
            raise NotReadyError("the UI is not loaded yet")
        await host(scope, receive, send)

    return Starlette(routes=[_PrefixRoute(UI_PREFIX, dispatch)], lifespan=lifespan)
