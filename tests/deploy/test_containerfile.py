"""Static checks of the Containerfiles and compose file (tests/deploy/test_container.py
runs them)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import yaml

from tests.conftest import REPO

CONTAINERFILES = (
    "Containerfile",
    "deploy/nginx.Containerfile",
    "deploy/redis.Containerfile",
    "deploy/smg.Containerfile",
)


def instructions(name: str = "Containerfile") -> list[tuple[str, str]]:
    text = (REPO / name).read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(p[0].upper(), p[1] if len(p) > 1 else "") for p in pairs]


def test_runtime_stage_is_non_root_checks_health_and_takes_volumes() -> None:
    steps = instructions()
    runtime = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    assert runtime[0] == ("FROM", "scratch")  # no shell, no Python, no package manager
    ops = [op for op, _ in runtime]
    users = [arg for op, arg in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ops.index("USER") < ops.index("CMD")
    (health,) = [arg for op, arg in runtime if op == "HEALTHCHECK"]
    assert '"health"' in health
    volumes = " ".join(arg for op, arg in runtime if op == "VOLUME")
    assert "/app/models" in volumes and "/app/data" in volumes


def test_every_image_builds_from_one_base_argument() -> None:
    """Docker Hub's Debian by default, the local one (make container-base) by --build-arg."""
    for name in CONTAINERFILES:
        steps = instructions(name)
        assert steps[0] == ("ARG", "BASE=docker.io/library/debian:bookworm-slim"), name
        assert ("FROM", "${BASE}") in steps or ("FROM", "${BASE} AS libs") in steps, name


def test_build_context_is_a_whitelist() -> None:
    """models/ and .venv/ hold gigabytes: only what the images copy is sent."""
    lines = (REPO / ".containerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    copied = {
        arg.split()[0] for name in CONTAINERFILES for op, arg in instructions(name) if op == "COPY"
    }
    for source in copied - {"--from=libs", "--chown=10001:10001"}:
        assert f"!{source}" in rules or any(source.startswith(r[1:] + "/") for r in rules), source


def test_compose_restarts_services_and_outwaits_the_drain() -> None:
    text = (REPO / "deploy" / "compose.yaml").read_text()
    services = re.findall(r"^  (\w+):", text.split("\nservices:\n", 1)[1], re.M)
    assert {"redis", "replica1", "replica2", "nginx"} <= set(services)
    # the replicas share x-replica; the others say it themselves
    assert text.count("restart: unless-stopped") == 3
    grace = int(re.search(r"stop_grace_period: (\d+)s", text).group(1))  # type: ignore[union-attr]
    assert grace > 30  # drain_timeout_s's default


def test_the_gateway_override_fronts_the_compose_replicas() -> None:
    """deploy/compose.gateway.yaml: SMG sends to the replicas compose.yaml runs, and nginx
    includes the gateway's locations from the folder its config names."""
    base = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    override = yaml.safe_load((REPO / "deploy" / "compose.gateway.yaml").read_text())
    command = override["services"]["gateway"]["command"]
    start = command.index("--worker-urls") + 1
    urls = list(itertools.takewhile(lambda a: not a.startswith("--"), command[start:]))
    replicas = sorted(n for n in base["services"] if n.startswith("replica"))
    assert urls == [f"http://{name}:8000" for name in replicas]
    port = next(a for a in command if a.startswith("--port=")).removeprefix("--port=")
    assert f"gateway:{port}" in (REPO / "deploy" / "nginx-gateway.conf").read_text()
    ((mount,),) = [override["services"]["nginx"]["volumes"]]
    source, target, _ = mount.split(":")
    assert (REPO / "deploy" / source).exists()
    include = re.search(r"include (\S+)/\*\.conf;", (REPO / "deploy" / "nginx.conf").read_text())
    assert include and str(Path(target).parent) == include.group(1)
