"""Baseline: the plain FastAPI + PyJWT + Pydantic app a user would write instead of the service.

Written independently of tabserve, as a typical app is: it imports nothing from this
repository and reads only plain files, the model bundle (``model.ubj`` and
``schema.json`` in the BentoML store, read without BentoML) and the users file (argon2
hashes). It does what such apps do:

- ``POST /auth/token``: OAuth2 password form, argon2-cffi's ``PasswordHasher.verify``,
  an HS256 JWT signed with PyJWT;
- ``POST /predict`` and ``POST /explain``: a bearer token checked with ``jwt.decode``
  (algorithm, signature, expiry, issuer, audience), the body parsed by FastAPI into a
  Pydantic model built from the schema (finite numbers, known categories, nullable
  fields, no unknown field), the rows as a pandas frame with categorical dtypes, and
  ``Booster.inplace_predict`` on it (``pred_contribs`` on a DMatrix of it to explain);
- no batching, no error envelope, no metrics, no revocation or login throttle.

Written the way a careful user would: ``async`` endpoints that call the booster
directly (no thread hop), ``JSONResponse`` without ``jsonable_encoder``, one XGBoost
thread per process. Configuration is read from the same environment the benchmark
gives every contender (``BENTOML_HOME``, ``TABSERVE_MODEL_TAG``, ``TABSERVE_JWT_SECRET``,
``TABSERVE_USERS_FILE``). ::

    uvicorn load_tests.baselines.fastapi_app:create_app --factory --workers 1 --port 3001
"""

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

import jwt
import numpy as np
import pandas as pd
import xgboost as xgb
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field, create_model

ISSUER = "tabserve-fastapi-baseline"
AUDIENCE = "predictions"
TOKEN_TTL_S = 900
MAX_ROWS = 1000


def model_directory() -> Path:
    """The model's folder in the BentoML store: ``$BENTOML_HOME/models/<name>/<version>``."""
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    name, _, version = os.environ.get("TABSERVE_MODEL_TAG", "tabserve:latest").partition(":")
    if version in ("", "latest"):
        version = (home / "models" / name / "latest").read_text().strip()
    return home / "models" / name / version


def request_model(features: list[dict[str, Any]]) -> type[BaseModel]:
    """``{"rows": [Row, ...]}``, each row a model with one field per feature."""
    fields: dict[str, Any] = {}
    for i, feature in enumerate(features):
        kind: Any
        if feature["kind"] == "numeric":
            kind = Annotated[float, Field(allow_inf_nan=False)]
        else:
            kind = Literal[tuple(feature["categories"])]
        if feature["nullable"]:
            fields[f"f{i}"] = (kind | None, Field(default=None, alias=feature["name"]))
        else:
            fields[f"f{i}"] = (kind, Field(alias=feature["name"]))
    row = create_model("Row", __config__=ConfigDict(extra="forbid"), **fields)
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        rows=(list[row], Field(min_length=1, max_length=MAX_ROWS)),  # type: ignore[valid-type]
    )


def create_app() -> FastAPI:
    """The app, with its model, schema and users loaded (``uvicorn --factory``)."""
    directory = model_directory()
    schema = json.loads((directory / "schema.json").read_text())
    features = schema["features"]
    names = [f["name"] for f in features]
    categories = {f["name"]: f["categories"] for f in features if f["kind"] == "categorical"}
    classes = schema["target"]["classes"]
    keys = [str(c) for c in classes]
    booster = xgb.Booster(model_file=str(directory / "model.ubj"))
    booster.set_param({"nthread": 1})
    secret = os.environ["TABSERVE_JWT_SECRET"]
    users = json.loads(Path(os.environ["TABSERVE_USERS_FILE"]).read_text())["users"]
    hasher = PasswordHasher()
    bearer = HTTPBearer()
    predict_request = request_model(features)

    app = FastAPI(title="tabserve baseline (FastAPI)")

    def user(credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]) -> dict:
        try:
            return dict(
                jwt.decode(
                    credentials.credentials,
                    secret,
                    algorithms=["HS256"],
                    audience=AUDIENCE,
                    issuer=ISSUER,
                    options={"require": ["exp", "iat", "sub"]},
                )
            )
        except jwt.InvalidTokenError:
            raise HTTPException(401, "invalid token") from None

    def frame(body: Any) -> pd.DataFrame:
        data = pd.DataFrame([row.model_dump(by_alias=True) for row in body.rows], columns=names)
        for name in names:
            if name in categories:
                data[name] = pd.Categorical(data[name], categories=categories[name])
            elif data[name].dtype == object:  # every value missing: None, not NaN
                data[name] = data[name].astype("float64")
        return data

    def probabilities(data: pd.DataFrame) -> np.ndarray:
        raw = np.asarray(booster.inplace_predict(data))
        return np.column_stack([1 - raw, raw]) if raw.ndim == 1 else raw

    @app.post("/auth/token")
    async def token(form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> JSONResponse:
        record = users.get(form.username)
        try:
            if record is None:
                raise VerificationError
            hasher.verify(record["password_hash"], form.password)
        except VerificationError:
            raise HTTPException(401, "invalid credentials") from None
        now = int(time.time())
        claims = {
            "sub": form.username,
            "scopes": record["scopes"],
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + TOKEN_TTL_S,
            "jti": uuid.uuid4().hex,
        }
        access = jwt.encode(claims, secret, algorithm="HS256")
        return JSONResponse(
            {"access_token": access, "token_type": "bearer", "expires_in": TOKEN_TTL_S}
        )

    @app.post("/predict")
    async def predict(
        body: predict_request,  # type: ignore[valid-type]
        who: Annotated[dict, Depends(user)],
    ) -> JSONResponse:
        if "predict" not in who.get("scopes", []):
            raise HTTPException(403, "needs the predict scope")
        proba = probabilities(frame(body))
        return JSONResponse(
            [
                {
                    "label": classes[int(np.argmax(p))],
                    "probabilities": dict(zip(keys, map(float, p), strict=True)),
                }
                for p in proba
            ]
        )

    @app.post("/explain")
    async def explain(
        body: predict_request,  # type: ignore[valid-type]
        who: Annotated[dict, Depends(user)],
    ) -> JSONResponse:
        if "explain" not in who.get("scopes", []):
            raise HTTPException(403, "needs the explain scope")
        data = frame(body)
        proba = probabilities(data)
        contribs = booster.predict(xgb.DMatrix(data, enable_categorical=True), pred_contribs=True)
        answers = []
        for i, p in enumerate(proba):
            label = int(np.argmax(p))
            row = contribs[i] if contribs.ndim == 2 else contribs[i, label]
            answers.append(
                {
                    "label": classes[label],
                    "base_value": float(row[-1]),
                    "contributions": {
                        n: (0.0 if math.isnan(v) else float(v))
                        for n, v in zip(names, row[:-1], strict=True)
                    },
                }
            )
        return JSONResponse(answers)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app
