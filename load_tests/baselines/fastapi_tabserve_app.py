"""Baseline: FastAPI + uvicorn doing tabserve's own per-request work, without BentoML.

Not what a user would write (that is ``fastapi_app.py``): the same booster (the bundle in
the BentoML store, read without BentoML), the same JWT check
(:func:`tabserve.security.tokens.verify_token`), the same login (the users file, argon2), the same
schema validation (:class:`tabserve.core.validation.RequestValidator`) and the same encoding
(:class:`tabserve.core.predictor.Predictor`: the schema's code matrix, no pandas frame); no
batching, no error envelope, no metrics. It tells apart what BentoML's machinery costs or
buys from what tabserve's own code does. Written the way a careful user would: ``async``
endpoints that call the booster directly (one request at a time per process, no thread
hop) and ``JSONResponse`` without ``jsonable_encoder``. ::

    uvicorn load_tests.baselines.fastapi_tabserve_app:app --workers 1 --port 3001
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordRequestForm

from load_tests.payloads import bundle_dir
from tabserve.core.errors import ServiceError
from tabserve.core.predictor import Predictor
from tabserve.core.validation import RequestValidator
from tabserve.security.tokens import Claims, issue_token, verify_token
from tabserve.security.users import UserStore
from tabserve.serving.settings import load_settings

STATE: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load settings, users and the model once per process."""
    settings = load_settings()
    _ = settings.keys.verification_key
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    directory = bundle_dir(home, settings.model_tag)
    predictor = Predictor.from_bundle(directory, version=directory.name, tag=settings.model_tag)
    STATE.update(
        settings=settings,
        users=UserStore(settings.resolved_users_file),
        predictor=predictor,
        validator=RequestValidator(predictor.schema, settings.max_rows),
    )
    yield


app = FastAPI(title="tabserve baseline (FastAPI)", lifespan=lifespan)
bearer = HTTPBearer()


def claims(credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]) -> Claims:
    """The verified claims of the bearer token (401 otherwise)."""
    try:
        return verify_token(STATE["settings"], credentials.credentials)
    except ServiceError as error:
        raise HTTPException(401, error.message) from None


def _rows(body: bytes) -> list[dict[str, Any]]:
    try:
        return STATE["validator"].validate_body(body)
    except ServiceError as error:
        raise HTTPException(error.status, error.message) from None


@app.post("/auth/token")
async def token(form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> JSONResponse:
    """OAuth2 password flow against the same users file."""
    record = await anyio.to_thread.run_sync(
        STATE["users"].authenticate, form.username, form.password
    )
    if record is None:
        raise HTTPException(401, "invalid credentials")
    access, ttl = issue_token(STATE["settings"], form.username, record.scopes)
    return JSONResponse({"access_token": access, "token_type": "bearer", "expires_in": ttl})


@app.post("/predict")
async def predict(request: Request, who: Annotated[Claims, Depends(claims)]) -> JSONResponse:
    """Labels and probabilities, one model call per request."""
    if not who.allows("predict"):
        raise HTTPException(403, "needs the predict scope")
    return JSONResponse(STATE["predictor"].predict(_rows(await request.body())))


@app.post("/explain")
async def explain(request: Request, who: Annotated[Claims, Depends(claims)]) -> JSONResponse:
    """Contributions, one model call per request."""
    if not who.allows("explain"):
        raise HTTPException(403, "needs the explain scope")
    return JSONResponse(STATE["predictor"].explain(_rows(await request.body())))


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    """Ready once the lifespan has loaded the model."""
    return {"status": "ready" if "predictor" in STATE else "starting"}
