"""The service as an ASGI app in process (penguins model: multiclass, categoricals, nulls)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import numpy as np
import pytest
import xgboost as xgb
from starlette.testclient import TestClient

from tabserve.serving.served_model import loaded_instance
from tests.service.conftest import TEST_PASSWORD


@pytest.fixture(scope="module")
def model(models: dict[str, Any]) -> Any:
    return models["multiclass"]


@pytest.fixture(scope="module")
def app(service_module: Any) -> Any:
    """The ASGI app (built once: BentoML registers its metrics once per process)."""
    return service_module.Tabserve.to_asgi()


@pytest.fixture(scope="module")
def not_ready_responses(app: Any, model: Any, token: Any) -> list[httpx.Response]:
    """Answers of the app before its lifespan has loaded the model."""
    import anyio

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)  # runs no lifespan
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return [
                await c.post("/predict", json={"rows": model.rows[:1]}, headers=auth(token())),
                await c.get("/model", headers=auth(token())),
                await c.get("/readyz"),
            ]

    return anyio.run(calls)


@pytest.fixture(scope="module")
def client(app: Any, not_ready_responses: Any) -> Iterator[TestClient]:
    """The app with its lifespan run (model loaded), as a test client."""
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the one envelope, with the request id of its header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return error


# ---- predictions -------------------------------------------------------------
def test_predict_equals_the_models_own_output(client: TestClient, model: Any, token: Any) -> None:
    rows = model.rows[:40]  # includes rows with missing values
    assert any(v is None for row in rows for v in row.values())
    response = client.post("/predict", json={"rows": rows}, headers=auth(token("predict")))
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "v2"
    answers = response.json()
    expected = model.booster.predict(
        xgb.DMatrix(model.schema.to_frame(rows), enable_categorical=True)
    )
    classes = model.schema.target.classes
    assert len(answers) == len(rows)
    for answer, probs in zip(answers, expected, strict=True):
        assert set(answer) == {"id", "label", "probabilities"}
        assert [answer["probabilities"][c] for c in classes] == [float(p) for p in probs]
        assert answer["label"] == classes[int(np.argmax(probs))]


def test_explain_gives_contributions_base_value_and_label(
    client: TestClient, model: Any, token: Any
) -> None:
    rows = model.rows[:3]
    response = client.post("/explain", json={"rows": rows}, headers=auth(token("explain")))
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "v2"
    for answer in response.json():
        assert answer["label"] in model.schema.target.classes
        assert set(answer["contributions"]) == set(model.schema.feature_names)
        assert isinstance(answer["base_value"], float)


def test_model_card(client: TestClient, model: Any, token: Any) -> None:
    response = client.get("/model", headers=auth(token("predict")))
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "v2"
    card = response.json()
    assert card["version"] == "v2"
    assert card["lineage"]["mlflow_run_id"] == "run-v2"
    assert card["lineage"]["registry_version"] == "2"
    assert card["lineage"]["git_commit"] == "deadbeef"
    assert len(card["lineage"]["model_sha256"]) == 64
    assert card["lineage"]["data_md5"]["train"] == "0" * 32
    assert card["metrics"] == {"accuracy": 0.9}
    assert card["params"]["max_depth"] == 3
    assert [f["name"] for f in card["schema"]["features"]] == model.schema.feature_names
    assert card["example_row"] == model.schema.example_row()
    # The example row is itself a valid request.
    ok = client.post("/predict", json={"rows": [card["example_row"]]}, headers=auth(token()))
    assert ok.status_code == 200


def test_health_metrics_and_docs_are_open(client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'tabserve_model_info{mlflow_run_id="run-v2"' in metrics.text
    assert client.get("/").status_code == 200  # the OpenAPI UI


def test_openapi_documents_the_models_features_auth_and_routes(
    client: TestClient, model: Any
) -> None:
    spec = client.get("/docs.json").json()
    assert {"/predict", "/explain", "/model", "/auth/token"} <= set(spec["paths"])
    assert spec["info"]["version"] == "v2"
    scheme = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["flows"]["password"]["tokenUrl"] == "/auth/token"
    predict = spec["paths"]["/predict"]["post"]
    assert predict["security"] == [{"OAuth2PasswordBearer": ["predict"]}]
    assert {"401", "403", "413", "415", "422"} <= set(predict["responses"])
    row = spec["components"]["schemas"]["Row"]
    assert set(row["properties"]) == set(model.schema.feature_names)
    assert row["additionalProperties"] is False
    assert set(row["required"]) == {"island", "year"}  # the features that may not be missing


def test_anonymous_docs_hold_no_training_statistics_a_token_holder_gets_them(
    client: TestClient, model: Any, token: Any
) -> None:
    """What anonymous callers may read of the model is a decision (SECURITY.md): names,
    types and nullability, not the observed ranges and categories of the training data."""
    anonymous = json.dumps(client.get("/docs.json").json()["components"]["schemas"]["Row"])
    island = next(f for f in model.schema.features if f.name == "island")
    assert "observed" not in anonymous and "enum" not in anonymous
    assert not any(f'"{category}"' in anonymous for category in island.categories)
    headers = {"Authorization": f"Bearer {token('predict')}"}
    full = json.dumps(client.get("/docs.json", headers=headers).json()["components"]["schemas"])
    assert "observed" in full and all(f'"{c}"' in full for c in island.categories)
    forged = client.get("/docs.json", headers={"Authorization": "Bearer forged"})
    assert forged.status_code == 200 and "observed" not in json.dumps(forged.json())


# ---- auth ----------------------------------------------------------------------
def test_token_endpoint_password_flow(client: TestClient, settings: Any) -> None:
    response = client.post("/auth/token", data={"username": "alice", "password": TEST_PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.token_ttl_s
    claims = jwt.decode(
        body["access_token"],
        settings.keys.signing_key,
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    assert claims["sub"] == "alice" and claims["scopes"] == ["predict", "explain"]
    assert {"exp", "iat", "jti"} <= set(claims)
    # The issued token works, and a narrower scope can be asked for.
    narrow = client.post(
        "/auth/token",
        data={"username": "alice", "password": TEST_PASSWORD, "scope": "predict"},
    ).json()["access_token"]
    assert client.post("/explain", json={"rows": [{}]}, headers=auth(narrow)).status_code == 403


def test_wrong_password_then_throttled(client: TestClient, caplog: Any) -> None:
    for _ in range(3):  # TABSERVE_LOGIN_MAX_FAILURES=3
        r = client.post("/auth/token", data={"username": "bob", "password": "guess-123"})
        assert_envelope(r, 401, "invalid_credentials")
    r = client.post("/auth/token", data={"username": "bob", "password": TEST_PASSWORD})
    error = assert_envelope(r, 429, "too_many_requests")
    assert int(r.headers["retry-after"]) > 0
    assert "guess-123" not in caplog.text and TEST_PASSWORD not in caplog.text
    assert error["message"]


def test_token_endpoint_errors(client: TestClient) -> None:
    assert_envelope(client.get("/auth/token"), 405, "method_not_allowed")
    assert_envelope(
        client.post("/auth/token", json={"username": "a", "password": "b"}),
        415,
        "unsupported_media_type",
    )
    error = assert_envelope(
        client.post("/auth/token", data={"username": "alice"}), 422, "validation_error"
    )
    assert error["details"][0]["field"] == "password"
    # Found by the fuzzer: a multipart form without its boundary was a 500.
    broken = client.post(
        "/auth/token",
        content=b"username=a&password=b",
        headers={"content-type": "multipart/form-data"},
    )
    assert_envelope(broken, 400, "malformed_request")


def _forged(settings: Any, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "alice",
        "scopes": ["predict"],
        "iat": now,
        "exp": now + 60,
        "jti": "x",
        **changes,
    }
    return jwt.encode(
        claims, settings.keys.signing_key, algorithm="HS256", headers={"kid": settings.keys.key_id}
    )


@pytest.mark.parametrize(
    "make_header",
    [
        lambda s: {},
        lambda s: {"Authorization": "Basic YWxpY2U6cHc="},
        lambda s: auth(jwt.encode({"sub": "alice"}, "x" * 40, algorithm="HS256")),
        lambda s: auth(_forged(s, exp=int(time.time()) - 600, iat=int(time.time()) - 700)),
        lambda s: auth(jwt.encode({"sub": "alice", "scopes": ["predict"]}, None, algorithm="none")),
        lambda s: auth(_forged(s, aud="other")),
        lambda s: auth(_forged(s, iss="other")),
    ],
    ids=["no-token", "basic", "bad-signature", "expired", "alg-none", "wrong-aud", "wrong-iss"],
)
@pytest.mark.parametrize("path", ["/predict", "/model", "/ui"])
def test_auth_failures_are_401(
    client: TestClient, model: Any, settings: Any, make_header: Any, path: str
) -> None:
    headers = make_header(settings)
    if path == "/model" or path == "/ui":
        response = client.get(path, headers=headers)
    else:
        response = client.post(path, json={"rows": model.rows[:1]}, headers=headers)
    assert_envelope(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_missing_scope_is_403(client: TestClient, model: Any, token: Any) -> None:
    body = {"rows": model.rows[:1]}
    error = assert_envelope(
        client.post("/explain", json=body, headers=auth(token("predict", sub="bob"))),
        403,
        "insufficient_scope",
    )
    assert error["details"] == [{"required_scope": "explain"}]
    assert_envelope(
        client.post("/predict", json=body, headers=auth(token("explain"))),
        403,
        "insufficient_scope",
    )
    assert client.post("/explain", json=body, headers=auth(token("admin"))).status_code == 200


# ---- errors --------------------------------------------------------------------
def test_validation_error_names_the_field(client: TestClient, model: Any, token: Any) -> None:
    row = {**model.rows[0], "island": ["Biscoe"], "bill_length_mm": None}
    row.pop("year")
    error = assert_envelope(
        client.post("/predict", json={"rows": [row]}, headers=auth(token())),
        422,
        "validation_error",
    )
    by_field = {d["field"]: d for d in error["details"]}
    assert "valid string" in by_field["island"]["message"]  # a list is never a category
    assert "missing" in by_field["year"]["message"]
    assert "bill_length_mm" not in by_field  # nullable: null is fine
    bad = {**model.rows[0], "colour": "red"}
    error = assert_envelope(
        client.post("/predict", json={"rows": [bad]}, headers=auth(token())),
        422,
        "validation_error",
    )
    assert error["details"][0]["field"] == "colour"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_422(
    client: TestClient, model: Any, token: Any, literal: str
) -> None:
    row = json.dumps({**model.rows[0], "body_mass_g": 0}).replace(
        '"body_mass_g": 0', f'"body_mass_g": {literal}'
    )
    response = client.post(
        "/predict",
        content=f'{{"rows": [{row}]}}',
        headers={**auth(token()), "content-type": "application/json"},
    )
    error = assert_envelope(response, 422, "validation_error")
    assert error["details"][0]["field"] == "body_mass_g"


def test_error_statuses_use_the_envelope(
    client: TestClient, model: Any, token: Any, settings: Any
) -> None:
    headers = auth(token())
    json_headers = {**headers, "content-type": "application/json"}
    assert_envelope(
        client.post("/predict", content=b'{"rows": [', headers=json_headers),
        400,
        "malformed_request",
    )
    assert_envelope(client.get("/no/such/route", headers=headers), 404, "not_found")
    assert_envelope(client.get("/predict", headers=headers), 405, "method_not_allowed")
    too_big = b'{"rows": [' + b" " * settings.max_body_bytes + b"]}"
    assert_envelope(
        client.post("/predict", content=too_big, headers=json_headers), 413, "payload_too_large"
    )
    rows = [model.rows[0]] * (settings.max_rows + 1)
    assert_envelope(
        client.post("/predict", json={"rows": rows}, headers=headers), 413, "payload_too_large"
    )
    for media_type in ("application/vnd.bentoml+pickle", "text/plain", "multipart/form-data"):
        assert_envelope(
            client.post("/predict", content=b"x", headers={**headers, "content-type": media_type}),
            415,
            "unsupported_media_type",
        )
    assert_envelope(
        client.post("/predict", json={"rows": []}, headers=headers), 422, "validation_error"
    )


def test_unexpected_error_is_a_bare_500(
    client: TestClient,
    model: Any,
    token: Any,
    service_module: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: Any,
) -> None:
    instance = loaded_instance()

    def broken(rows: Any) -> Any:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(instance.predictor, "explanations", broken)
    response = client.post("/explain", json={"rows": model.rows[:1]}, headers=auth(token()))
    assert_envelope(response, 500, "internal_error")
    assert "secret internals" not in response.text
    assert "secret internals" in caplog.text  # the server log keeps the cause


def test_not_ready_is_503(not_ready_responses: list[httpx.Response]) -> None:
    """Before the lifespan has loaded the model, the APIs and /readyz answer 503."""
    for response in not_ready_responses:
        assert_envelope(response, 503, "not_ready")
