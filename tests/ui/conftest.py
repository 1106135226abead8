"""The UI package's real server: one ``bentoml serve`` of the penguins model for every
module here (it takes about 15 s to start).

Penguins is multiclass with categoricals (dropdowns), integer features and missing
values, and here a date (a date picker: when each bird was observed, seeded random).
The server runs with its own BentoML home, secret and users file, and with small batch
limits so that the limit messages are cheap to trigger.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from tabserve.security.users import UserStore
from tabserve.serving.settings import Settings
from tests.support import TestModel, import_test_model, running_server
from tests.ui.browser import PASSWORD

MAX_ROWS = 50
MAX_UPLOAD_BYTES = 16 * 1024


@dataclass(frozen=True)
class UIServer:
    """The running server, the model it serves and settings that sign like it."""

    url: str
    model: TestModel
    settings: Settings
    log: Path
    gradio_dir: Path


@pytest.fixture(scope="package")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    import palmerpenguins

    root = tmp_path_factory.mktemp("ui")
    penguins = palmerpenguins.load_penguins()
    days = np.random.default_rng(3).integers(0, 700, len(penguins))
    observed = pd.Timestamp("2007-11-01") + pd.to_timedelta(days, unit="D")
    penguins.insert(1, "observed", [d.date().isoformat() for d in observed])
    model = import_test_model(
        root / "bentoml",
        penguins,
        "species",
        {"objective": "multi:softprob", "num_class": 3},
        tag="tabserve:v2",
    )
    store = UserStore(root / "users.json")
    store.add("alice", PASSWORD, "predict,explain")
    store.add("bob", PASSWORD, "predict")
    store.add("eve", PASSWORD, "explain")
    secret = secrets.token_urlsafe(48)
    env = {
        **os.environ,
        "BENTOML_HOME": str(root / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(root / "gradio"),
        "TABSERVE_ENV": "development",
        "TABSERVE_JWT_SECRET": secret,
        "TABSERVE_USERS_FILE": str(store.path),
        "TABSERVE_LOCAL_DIR": str(root / "local"),
        "TABSERVE_MODEL_TAG": model.tag,
        "TABSERVE_UI_BATCH_MAX_ROWS": str(MAX_ROWS),
        "TABSERVE_UI_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # bentoml serve sets up its own
    settings = Settings(jwt_secret=SecretStr(secret), users_file=store.path)
    log = root / "serve.log"
    with running_server(env, log) as url:
        yield UIServer(url, model, settings, log, root / "gradio")
