"""Static checks of the Containerfile (no container engine runs on the test machines)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "Containerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(p[0].upper(), p[1] if len(p) > 1 else "") for p in pairs]


def test_runtime_stage_is_non_root_checks_health_and_takes_a_models_volume() -> None:
    steps = instructions()
    runtime = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    ops = [op for op, _ in runtime]
    users = [arg for op, arg in runtime if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ops.index("USER") < ops.index("CMD")
    (health,) = [arg for op, arg in runtime if op == "HEALTHCHECK"]
    assert "/health_check" in health and "127.0.0.1:8000" in health
    assert any(op == "VOLUME" and "/app/models" in arg for op, arg in runtime)


def test_build_stage_copies_what_the_package_links_to() -> None:
    # server/config.json is a link to the repo's config.json: the wheel needs both
    assert (REPO / "server" / "config.json").resolve() == REPO / "config.json"
    steps = instructions()
    runtime_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    copied = " ".join(arg for op, arg in steps[:runtime_from] if op == "COPY")
    assert "config.json" in copied
