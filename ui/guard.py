"""The gate in front of Gradio's event routes: every UI call is checked before Gradio
sees it.

Gradio checks that a file input was really uploaded only in an app started with
``launch()``; mounted with ``mount_gradio_app`` (as here) it copies into its cache, and
hands to the handler, any path a client names (``/etc/passwd``, ``/dev/zero``), and
downloads any URL. Gradio also answers every malformed call with a 500. So the UI's
event calls pass this pure ASGI gate first, which:

- lets through only the plain HTTP event routes the UI uses (``run/<name>``; the queue's
  ``queue/join`` and ``call/<name>`` are refused: no event of this UI uses the queue);
- checks the call's shape against the event it names: a JSON object with a ``data``
  list of one value per input, each of the input's type (a number, one of a
  dropdown's choices, an uploaded file);
- accepts a file only if Gradio's own upload route stored it, for this same session,
  in Gradio's upload folder (content-addressed: ``<folder>/<sha256>/<name>``), as a
  regular file of at most the upload limit: the upload route's answers are recorded in
  the auth state store (shared by every worker with Redis) under the session's ``jti``;
- answers anything else with a 4xx in the service's error envelope, before Gradio copies
  or reads anything.

Gradio's own check is switched on as a second wall (:func:`enforce_upload_checks`),
with ``blocked_paths`` over the system's and the app's folders.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabserve.core.errors import (
    MalformedRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RequestValidationError,
    ServiceError,
    UnsupportedMediaTypeError,
)
from tabserve.http.envelope import error_response
from tabserve.http.requests import STATE_STORE, TOKEN_ID, replayed_body
from tabserve.security.state import StateStore, hashed

logger = logging.getLogger("tabserve.ui")

API_PREFIX = "/gradio_api"
UPLOAD_KIND = "ui-upload"
# An event call carries one form's values or one file reference: a few kB.
MAX_CALL_BYTES = 256 * 1024
_EVENT_ROUTE = re.compile(r"/(?:run|api)/(?P<name>[^/]+)/?")
_QUEUED_ROUTE = re.compile(r"/(?:queue/join/?|call/.*)")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# The system's folders: Gradio's blocked_paths (its own second wall).
MAX_TEXT = 64  # a date or timestamp input's longest value
SYSTEM_FOLDERS = ("/etc", "/proc", "/sys", "/dev", "/root", "/home", "/var", "/usr", "/boot")


@dataclass(frozen=True)
class EventInput:
    """What one input of an event accepts."""

    kind: str  # "file", "number", "choice", "text" or "any"
    choices: frozenset[Any] = frozenset()


@dataclass(frozen=True)
class Event:
    """One of the UI's events: its name and its inputs, in order."""

    name: str
    inputs: tuple[EventInput, ...]


def _event_input(block: Any) -> EventInput:
    import gradio as gr

    if isinstance(block, gr.File | gr.UploadButton):
        return EventInput("file")
    if isinstance(block, gr.Number):
        return EventInput("number")
    if isinstance(block, gr.DateTime):
        return EventInput("text")
    if isinstance(block, gr.Dropdown) and not block.allow_custom_value:
        choices = frozenset(value for _, value in block.choices)
        return EventInput("choice", choices)
    return EventInput("any")


def blocks_events(blocks: Any) -> dict[int, Event]:
    """The events of ``blocks`` by Gradio's function index."""
    events = {}
    for index, fn in blocks.fns.items():
        name = fn.api_name if isinstance(fn.api_name, str) else f"fn{index}"
        events[index] = Event(name, tuple(_event_input(b) for b in fn.inputs))
    return events


def upload_folder() -> Path:
    """Gradio's upload folder (``GRADIO_TEMP_DIR``, else ``<tmp>/gradio``), resolved."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def blocked_folders(app_folders: Iterable[str | Path]) -> list[str]:
    """The system's folders and the app's (its code, model store, secrets), for Gradio's
    ``blocked_paths``; none that holds Gradio's upload folder or the temporary folder,
    which the UI needs."""
    import tempfile

    needed = [upload_folder(), Path(tempfile.gettempdir()).resolve()]
    blocked: list[str] = []
    for folder in (*SYSTEM_FOLDERS, *app_folders):
        path = Path(folder).resolve()
        if not any(n == path or n.is_relative_to(path) for n in needed):
            blocked.append(str(path))
    return sorted(set(blocked))


def enforce_upload_checks(blocks: Any) -> bool:
    """Switch on Gradio's own check of file inputs (made only once ``launch()`` ran).

    Gradio then refuses, before copying it, a file input outside its upload folder and any
    path in ``blocked_paths``. Returns False, with a warning, where this Gradio release
    has no ``has_launched`` flag (the gate above still holds).
    """
    if not hasattr(blocks, "has_launched"):
        logger.warning("Gradio has no has_launched flag: only tabserve's gate checks uploads")
        return False
    blocks.has_launched = True
    return True


class UploadRecord:
    """Which uploads belong to which session, in the auth state store.

    Args:
        ttl_s: how long an upload may be used (Gradio deletes it from its cache then).
    """

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s

    async def add(self, store: StateStore, session: str, path: str) -> None:
        await store.mark(UPLOAD_KIND, hashed(session, path), self.ttl_s)

    async def has(self, store: StateStore, session: str, path: str) -> bool:
        return await store.marked(UPLOAD_KIND, hashed(session, path)) is not None


class UICallGuard:
    """Pure ASGI: checks the UI's event calls and records its uploads (module doc).

    Args:
        app: the Gradio host app.
        prefix: the UI's mount path (``/ui``).
        events: the UI's events by function index (:func:`blocks_events`).
        max_upload_bytes: the largest file an event may be given.
        ttl_s: how long an upload stays usable.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        prefix: str,
        events: dict[int, Event],
        max_upload_bytes: int,
        ttl_s: int,
    ) -> None:
        self.app = app
        self.api_prefix = prefix + API_PREFIX
        self.events = events
        self.by_name = {event.name: index for index, event in events.items()}
        self.max_upload_bytes = max_upload_bytes
        self.uploads = UploadRecord(ttl_s)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            await self._post(scope, receive, send)
        except ServiceError as error:
            # Answered here: an exception would reach Starlette's error middleware (a 500).
            await error_response(error)(scope, receive, send)

    async def _post(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        route = path.removeprefix(self.api_prefix) if path.startswith(self.api_prefix) else ""
        if route in ("/upload", "/upload/"):
            await self._upload(scope, receive, send)
        elif match := _EVENT_ROUTE.fullmatch(route):
            body = await self._body(scope, receive)
            await self._check_call(scope, match.group("name"), body)
            await self.app(scope, replayed_body(body, receive), send)
        elif _QUEUED_ROUTE.fullmatch(route):
            raise NotFoundError(
                "the UI's events are plain HTTP calls (POST .../gradio_api/run/<name>); "
                "Gradio's queue is not used"
            )
        else:
            await self.app(scope, receive, send)

    # ---- the upload route: record what it stored, for this session -----------------
    async def _upload(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        session, store = _session(scope)
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            if start.get("status") == 200:
                for stored in _stored_paths(body):
                    await self.uploads.add(store, session, stored)
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)

    # ---- event calls -------------------------------------------------------------------
    async def _body(self, scope: dict[str, Any], receive: Any) -> bytes:
        headers = dict(scope["headers"])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type != b"application/json":
            raise UnsupportedMediaTypeError("a UI event call is application/json")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise MalformedRequestError("the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_CALL_BYTES:
                raise PayloadTooLargeError(f"a UI event call is at most {MAX_CALL_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _check_call(self, scope: dict[str, Any], name: str, body: bytes) -> None:
        try:
            call = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise MalformedRequestError("a UI event call is a UTF-8 JSON object") from None
        if not isinstance(call, dict) or not isinstance(call.get("data"), list):
            raise MalformedRequestError("a UI event call is a JSON object with a 'data' list")
        index = call.get("fn_index")
        if index is None:
            index = self.by_name.get(name)
        event = self.events.get(index) if isinstance(index, int) else None
        if event is None:
            raise NotFoundError("no such UI event")
        data = call["data"]
        if len(data) != len(event.inputs):
            raise RequestValidationError(
                f"the UI event {event.name!r} takes {len(event.inputs)} value(s), not {len(data)}"
            )
        for position, (spec, value) in enumerate(zip(event.inputs, data, strict=True)):
            problem = await self._problem(scope, spec, value)
            if problem is not None:
                raise RequestValidationError(
                    f"the UI event {event.name!r} cannot take this value",
                    details=[{"field": f"data[{position}]", "message": problem}],
                )

    async def _problem(self, scope: dict[str, Any], spec: EventInput, value: Any) -> str | None:
        """Why ``value`` does not fit ``spec``; None if it does."""
        if value is None or spec.kind == "any":
            return None
        if spec.kind == "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return None if ok else "must be a number or null"
        if spec.kind == "text":
            ok = isinstance(value, str) and len(value) <= MAX_TEXT
            return None if ok else f"must be text of at most {MAX_TEXT} characters"
        if spec.kind == "choice":
            return None if _hashable(value) and value in spec.choices else "not one of the choices"
        return await self._file_problem(scope, value)

    async def _file_problem(self, scope: dict[str, Any], value: Any) -> str | None:
        from gradio.data_classes import FileData
        from pydantic import ValidationError

        if not isinstance(value, dict) or not isinstance(value.get("path"), str):
            return "must be a file uploaded through this UI"
        try:  # Gradio's own model of a file reference, as its preprocessing checks it
            FileData.model_validate(value, context={"validate_meta": True})
        except ValidationError:
            return "not a Gradio file reference (path, meta._type 'gradio.FileData')"
        if value.get("is_stream"):
            return "streams are not accepted"
        path = value["path"]
        folder = upload_folder()
        resolved = Path(os.path.realpath(path))
        inside = resolved.is_relative_to(folder) and resolved.relative_to(folder).parts
        if (
            not os.path.isabs(path)
            or os.path.normpath(path) != str(resolved)
            or not inside
            or len(inside) != 2
            or not _SHA256_HEX.fullmatch(inside[0])
        ):
            logger.warning("UI call refused: a file outside the upload folder was named")
            return "not a file uploaded through this UI"
        session, store = _session(scope)
        if not await self.uploads.has(store, session, str(resolved)):
            logger.warning("UI call refused: the file was not uploaded in this session")
            return "not a file uploaded in this session (upload it again)"
        try:
            info = os.lstat(resolved)
        except OSError:
            return "the upload is gone (uploads last an hour): upload it again"
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_size > self.max_upload_bytes:
            return f"the file is over the {self.max_upload_bytes:,}-byte upload limit"
        return None


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _session(scope: dict[str, Any]) -> tuple[str, StateStore]:
    """The session's token id and the auth state store, set by the auth middleware."""
    state = scope.get("state", {})
    session, store = state.get(TOKEN_ID), state.get(STATE_STORE)
    if not isinstance(session, str) or store is None:
        # The auth middleware answers every /ui request without a session first.
        raise RuntimeError("UI call without an authenticated session in its scope")
    return session, store


def _stored_paths(body: bytes) -> list[str]:
    """The paths Gradio's upload route answered with (a JSON list of strings)."""
    try:
        paths = json.loads(body)
    except ValueError:
        return []
    if not isinstance(paths, list):
        return []
    return [os.path.realpath(p) for p in paths if isinstance(p, str)]
