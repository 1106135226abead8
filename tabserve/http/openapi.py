"""OpenAPI docs that match what the service really does.

BentoML generates ``/docs.json`` from the API signatures, which know neither the
model's features (the request model is built from the schema at start-up), nor
the routes the middlewares own (``/auth/token``, ``/model``), nor bearer auth.
:func:`augment_spec` adds them; :class:`OpenAPIMiddleware` applies it to the
``/docs.json`` response, so the docs UI at ``/`` documents the loaded model and
its "Authorize" button runs the OAuth2 password flow. Anonymous callers get the
features' names, types and nullability, not the training data's observed ranges and
categories; a request with a valid bearer token gets those too.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tabserve.core.schema import FeatureSchema
from tabserve.core.validation import RequestValidator
from tabserve.http.auth import ROUTE_SCOPES, TOKEN_PATH
from tabserve.http.instance import StateProvider
from tabserve.http.requests import SUBJECT, request_state
from tabserve.security.scopes import SCOPES

SPEC_PATH = "/docs.json"
SECURITY_SCHEME = "OAuth2PasswordBearer"
_REF = "#/components/schemas/{model}"

_ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "example": "validation_error"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
                "request_id": {"type": "string", "description": "also in X-Request-ID"},
            },
        }
    },
}

_ERRORS = {
    "400": "Malformed JSON",
    "401": "Missing or invalid bearer token",
    "403": "The token lacks the route's scope",
    "413": "Body over the size limit, or too many rows",
    "415": "Content type other than application/json",
    "422": "Rows that do not match the model's feature schema",
    "500": "Unexpected error (details in the server log, under the request id)",
    "503": "Model not loaded yet, or overloaded",
}


def _error_responses(statuses: list[str]) -> dict[str, Any]:
    ref = {"$ref": _REF.format(model="ErrorEnvelope")}
    return {
        s: {"description": _ERRORS[s], "content": {"application/json": {"schema": ref}}}
        for s in statuses
    }


_ID = {
    "type": "string",
    "description": "the row's id, <request id>-<index>: keep it to send the row's ground "
    "truth to POST /feedback",
    "example": "5f1c0a9e3b7d2c41-0",
}


def answer_schemas(schema: FeatureSchema) -> dict[str, dict[str, Any]]:
    """The JSON schemas of one ``/predict`` answer and one ``/explain`` answer for the
    model's task (a classifier's label and probabilities, or a value and its interval),
    each with the row's ``id``."""
    schemas = _task_answer_schemas(schema)
    for answer in schemas.values():
        answer["required"] = ["id", *answer["required"]]
        answer["properties"] = {"id": _ID, **answer["properties"]}
    return schemas


def feedback_path(schema: FeatureSchema) -> dict[str, Any]:
    """``POST /feedback``: the ground truth of answered rows (``tabserve/serving/feedback.py``)."""
    classes = list(schema.target.classes)
    actual = (
        "the true value, a finite number"
        if schema.target.is_regression
        else f"the true class, one of {classes} (or its text)"
    )
    outcome = {"enum": ["recorded", "unknown_id", "invalid", "duplicate"]}
    # Any item is taken: one that is not as described gets the outcome "invalid" with the
    # reason and never fails the others, so the schema describes and does not constrain.
    row = {
        "description": 'each {"id": <an answer\'s id>, "actual": <the true value>}',
        "properties": {
            "id": {"description": _ID["description"], "example": _ID["example"]},
            "actual": {"description": actual, "example": 0.0 if not classes else classes[0]},
        },
    }
    answered = {
        "type": "object",
        "required": ["id", "outcome"],
        "properties": {"id": _ID, "outcome": outcome, "reason": {"type": "string"}},
    }
    return {
        "post": {
            "tags": ["Service APIs"],
            "summary": "The ground truth of answered rows, by their ids",
            "description": "One outcome per row, in order: recorded; unknown_id (never "
            "answered, or older than the retention); invalid (with the reason); duplicate "
            "(already recorded: the first report stands). A bad row never fails the others. "
            "503 when the server keeps no record (TABSERVE_RECORD_URL).",
            "security": [{SECURITY_SCHEME: ["feedback"]}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["rows"],
                            "properties": {"rows": {"type": "array", "items": row, "minItems": 1}},
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Each row's outcome, and the counts",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "rows": {"type": "array", "items": answered},
                                    "counts": {"type": "object"},
                                },
                            }
                        }
                    },
                },
                **_error_responses(["400", "401", "403", "413", "415", "422", "500", "503"]),
            },
        }
    }


def _task_answer_schemas(schema: FeatureSchema) -> dict[str, dict[str, Any]]:
    number = {"type": "number"}
    contributions = {
        "type": "object",
        "description": "each feature's contribution, in margin space",
        "properties": dict.fromkeys(schema.feature_names, number),
    }
    if schema.target.is_regression:
        interval = {
            "type": "object",
            "required": ["low", "high", "coverage"],
            "properties": {
                "low": number,
                "high": number,
                "coverage": {
                    **number,
                    "description": "nominal share of targets the interval holds",
                },
            },
        }
        return {
            "Prediction": {
                "type": "object",
                "required": ["value", "interval"],
                "properties": {"value": number, "interval": interval},
            },
            "Explanation": {
                "type": "object",
                "required": ["value", "base_value", "contributions"],
                "description": "value == base_value + sum(contributions)",
                "properties": {
                    "value": number,
                    "base_value": number,
                    "contributions": contributions,
                },
            },
        }
    label = {"enum": list(schema.target.classes)}
    return {
        "Prediction": {
            "type": "object",
            "required": ["label", "probabilities"],
            "properties": {
                "label": label,
                "probabilities": {
                    "type": "object",
                    "properties": {str(c): number for c in schema.target.classes},
                },
            },
        },
        "Explanation": {
            "type": "object",
            "required": ["label", "explained_class", "base_value", "contributions"],
            "properties": {
                "label": label,
                "explained_class": label,
                "base_value": number,
                "contributions": contributions,
            },
        },
    }


def public_row(row: dict[str, Any], schema: FeatureSchema) -> dict[str, Any]:
    """The request row's JSON schema as anonymous callers may read it: each feature's
    name, type and whether it may be null; not what the training data held (observed
    ranges, the categories seen). ``GET /model`` gives those, with a token (SECURITY.md,
    "What anonymous callers can read")."""
    properties: dict[str, Any] = {}
    for spec in schema.features:
        kind: dict[str, Any] = {"type": "number" if spec.kind == "numeric" else "string"}
        if spec.kind == "numeric":
            described = "integer" if spec.integer else "number"
        elif spec.is_when and spec.format:
            described = f"a {spec.kind}: ISO 8601 or {spec.format}"
        elif spec.is_when:
            kind["format"] = "date" if spec.kind == "date" else "date-time"
            described = f"an ISO 8601 {spec.kind}"
        else:
            described = "a category seen in training (the list: GET /model)"
        field: dict[str, Any] = {**kind, "title": spec.name}
        if spec.nullable:
            field = {"anyOf": [kind, {"type": "null"}], "title": spec.name}
        field["description"] = described + ("; may be null" if spec.nullable else "; required")
        properties[spec.name] = field
    return {
        "type": "object",
        "title": row.get("title", "Row"),
        "additionalProperties": False,
        "properties": properties,
        "required": [f.name for f in schema.features if not f.nullable],
    }


def augment_spec(
    spec: dict[str, Any], validator: RequestValidator, version: str, *, public: bool = True
) -> dict[str, Any]:
    """Return a copy of BentoML's spec with the model's request schema, auth and extra routes.

    Args:
        spec: the spec BentoML generated.
        validator: the request validator of the loaded model.
        version: the served model version.
        public: for an anonymous caller: the row without the training data's observed
            ranges and categories (:func:`public_row`); a caller with a valid token gets
            them (as in ``GET /model``).
    """
    spec = copy.deepcopy(spec)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    request_schema = validator.request_model.model_json_schema(ref_template=_REF)
    schemas.update(request_schema.pop("$defs", {}))
    if public:
        schemas["Row"] = public_row(schemas["Row"], validator.schema)
    schemas["PredictRequest"] = request_schema
    schemas["ErrorEnvelope"] = _ENVELOPE_SCHEMA
    schemas.update(answer_schemas(validator.schema))
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "oauth2",
        "flows": {
            "password": {
                "tokenUrl": TOKEN_PATH,
                "scopes": {s: f"call the {s} routes" for s in SCOPES},
            }
        },
    }
    info = spec.setdefault("info", {})
    info["version"] = version
    paths = spec.setdefault("paths", {})
    body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="PredictRequest")}}},
    }
    answers = {"/predict": "Prediction", "/explain": "Explanation"}
    for path, scope in ROUTE_SCOPES.items():
        operation = paths.get(path, {}).get("post")
        if operation is None:
            continue
        operation["requestBody"] = body
        operation["security"] = [{SECURITY_SCHEME: [scope]}]
        responses = operation.setdefault("responses", {})
        responses["200"] = {
            "description": "One answer per row, in order",
            "content": {
                "application/json": {
                    "schema": {"type": "array", "items": {"$ref": _REF.format(model=answers[path])}}
                }
            },
        }
        responses.update(_error_responses(["400", "401", "403", "413", "415", "422", "500", "503"]))
    paths["/feedback"] = feedback_path(validator.schema)
    paths["/model"] = {
        "get": {
            "tags": ["Service APIs"],
            "summary": "The model card",
            "description": "Version, lineage, test metrics, params, feature schema and an "
            "example row.",
            "security": [{SECURITY_SCHEME: []}],
            "responses": {
                "200": {"description": "The model card"},
                **_error_responses(["401", "503"]),
            },
        }
    }
    paths[TOKEN_PATH] = {
        "post": {
            "tags": ["Service APIs"],
            "summary": "OAuth2 password flow: a short-lived bearer token",
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "required": ["username", "password"],
                            "properties": {
                                "grant_type": {"type": "string", "enum": ["password"]},
                                "username": {"type": "string"},
                                "password": {"type": "string", "format": "password"},
                                "scope": {"type": "string", "example": "predict explain"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "A signed JWT",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "access_token": {"type": "string"},
                                    "token_type": {"type": "string", "example": "bearer"},
                                    "expires_in": {"type": "integer"},
                                    "scope": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "401": {"description": "Unknown user or wrong password"},
                "429": {"description": "Too many failed logins (see Retry-After)"},
            },
        }
    }
    return spec


class OpenAPIMiddleware:
    """Rewrites BentoML's ``/docs.json`` with :func:`augment_spec` once the model is loaded.

    Args:
        app: the wrapped ASGI app.
        state: returns the loaded service instance, or None before it is ready.
    """

    def __init__(self, app: Any, state: StateProvider) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        serving = self.state()
        if scope["type"] != "http" or scope["path"] != SPEC_PATH or serving is None:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if start.get("status") == 200:
            public = request_state(scope).get(SUBJECT) is None  # no valid token came with it
            spec = augment_spec(
                json.loads(body), serving.validator, serving.model_version, public=public
            )
            body = json.dumps(spec).encode("utf-8")
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
