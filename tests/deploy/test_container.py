"""The server's image, built and run by real podman: `make container-build` (the single
binary's folder on the C libraries it loads, see Containerfile and docs/containers.md).

Containers run on the host's network, each on a port of its own: that works rootless
and in sandboxes where podman cannot make networks. Every container and volume a test
makes has a name of its own and is removed when the test ends.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.launcher import free_port
from tests.conftest import ARTIFACTS, DEFAULT_MODEL, REPO
from tests.deploy.test_binary import PROMPT, answers, pip_indexes

if not sys.platform.startswith("linux"):
    pytest.skip("podman runs Linux containers on Linux only", allow_module_level=True)

# The image's build (the binary ~50 s, the image ~30 s) is part of the first test's time.
pytestmark = pytest.mark.timeout(1200)
IMAGE = "localhost/edge-llm-server"
# podman's settings for sandboxes (runc, no ulimits), as the Makefile sets them
ENV = {
    "CONTAINERS_CONF": os.environ.get(
        "CONTAINERS_CONF", str(REPO / "packaging" / "container" / "containers.conf")
    ),
    "BUILDAH_ISOLATION": "chroot",
}
DRAIN_S = 120  # the drain ends when the work does: a slow box gets the time it needs


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert not check or done.returncode == 0, f"podman {args}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def image() -> str:
    done = subprocess.run(
        ["make", "container-build"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, **ENV},
    )
    (ARTIFACTS / "container_build.log").parent.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "container_build.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return IMAGE


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"edge-test-{uuid.uuid4().hex[:8]}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "-f", name, check=False)


class Container:
    """One `podman run -d` of the image, serving on its own port of the host."""

    def __init__(self, image: str, *volumes: str, **env: str) -> None:
        self.name = f"edge-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        flags = [f"--volume={v}" for v in volumes]
        flags += [f"--env={k}={v}" for k, v in {"EDGE_LLM_PORT": str(self.port), **env}.items()]
        started = time.monotonic()
        podman("run", "-d", "--name", self.name, "--network=host", *flags, image)
        self.healthy_after = self.wait_healthy(started)

    def wait_healthy(self, started: float, within: float = 60) -> float:
        """Seconds from `podman run` until the image's own health check passes."""
        while time.monotonic() - started < within:
            if podman("healthcheck", "run", self.name, check=False).returncode == 0:
                return time.monotonic() - started
            state = podman("inspect", "--format", "{{.State.Status}}", self.name).stdout
            assert state.strip() == "running", self.logs()
            time.sleep(0.1)
        raise AssertionError(f"not healthy within {within} s: {self.logs()}")

    def logs(self) -> str:
        return podman("logs", self.name, check=False).stderr[-3000:]

    def remove(self) -> None:
        (ARTIFACTS / f"{self.name}.log").write_text(self.logs())
        podman("rm", "-f", "-v", "-t", "0", self.name, check=False)  # -v: its anonymous volumes


@contextlib.contextmanager
def container(image: str, *volumes: str, **env: str) -> Iterator[Container]:
    box = Container(image, *volumes, EDGE_LLM_THREADS="1", **env)
    try:
        yield box
    finally:
        box.remove()


def test_image_is_small_non_root_and_carries_no_python_or_compiler(image: str) -> None:
    inspect = podman("image", "inspect", "--format", "{{.Size}} {{.Config.User}}", image)
    size, user = inspect.stdout.split()
    assert int(size) < 150e6, f"{int(size) / 1e6:.0f} MB"
    assert user == "10001:10001"
    box = podman("create", image).stdout.strip()
    try:
        exported = subprocess.run(
            ["podman", "export", box], env={**os.environ, **ENV}, capture_output=True, check=True
        )
    finally:
        podman("rm", "-v", box)
    with tarfile.open(fileobj=io.BytesIO(exported.stdout)) as tar:
        files = {Path(m.name).name for m in tar.getmembers() if not m.isdir()}
    assert "edge-llm" in files and "libllama.so" in files
    # (the binary's own Python is inside libpython, with no interpreter to run scripts)
    assert not files & {"python3", "python3.11", "pip", "gcc", "cc", "sh", "apt-get", "pytest"}


def test_container_serves_what_the_source_server_serves_and_drains_on_sigterm(
    image: str, server: str
) -> None:
    models = f"{REPO / 'models'}:/app/models:ro"
    with container(image, models, EDGE_LLM_DRAIN_TIMEOUT_S=str(DRAIN_S)) as box:
        # how fast it starts is bench/startup.py's to measure; here: that it does
        assert httpx.get(box.url + "/health_check").json()["status"] == "ok"
        # The source server first: a Q4_1 model's Q8_0 conversion and its speed record,
        # which it makes beside the file, are then what the read-only mount shows.
        outside = answers(server)
        assert answers(box.url) == outside and all(outside)

        # A generation running when SIGTERM comes is finished, then the server exits 0.
        # Its first token is the sign that it runs (not a sleep: a fast box would finish
        # it before the signal, a slow one would not have begun).
        body = {"prompt": PROMPT, "max_tokens": 200, "temperature": 0, "cache": False}
        lines: list[str] = []
        first_token = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", box.url + "/generate", json=body | {"stream": True}) as r:
                for line in r.iter_lines():
                    if line:
                        lines.append(line)
                    if line.startswith("data: {"):
                        first_token.set()

        thread = threading.Thread(target=stream)
        thread.start()
        assert first_token.wait(60), "the generation did not start"
        podman("kill", "--signal", "TERM", box.name)
        code = podman("wait", box.name, timeout=DRAIN_S + 30).stdout.strip()
        thread.join(30)
        assert code == "0", box.logs()
        assert not thread.is_alive()
        assert lines[-1] == "data: [DONE]" and '"finish_reason"' in "".join(lines), lines[-3:]


def pull_flags() -> tuple[list[str], dict[str, str]]:
    """This machine's package indexes for `pull`: a local index's folder (its simple/ and
    the files it links to) mounted read-only, and the host's CA bundle, which trusts what
    the host trusts (a proxy's own CA, say)."""
    indexes = pip_indexes()
    urls = " ".join(indexes.values()).split()
    local = {Path(u.removeprefix("file://")) for u in urls if u.startswith("file://")}
    folders = {str(f.parent if f.name == "simple" else f) for f in local}
    mounts = [f"{f}:{f}:ro" for f in sorted(folders)]
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if Path(bundle).is_file():
        mounts.append(f"{bundle}:{bundle}:ro")
    return mounts, indexes


def test_model_pulled_into_the_volume_outlives_the_container(image: str, volume: str) -> None:
    mounts, indexes = pull_flags()
    flags = [f"--volume={volume}:/app/models", *(f"--volume={m}" for m in mounts)]
    flags += [f"--env={k}={v}" for k, v in indexes.items()]
    pulled = podman(
        "run", "--rm", "--network=host", *flags, image, "pull", DEFAULT_MODEL, timeout=600
    )
    assert "100%" in pulled.stderr, pulled.stderr[-2000:]
    for start in ("first", "after a restart"):
        with container(image, f"{volume}:/app/models") as box:
            health = httpx.get(box.url + "/health_check").json()
            assert health["models"][DEFAULT_MODEL]["path"].startswith("/app/models/"), start
            # the first load converts the Q4_1 file to Q8_0 in the writable volume (seconds)
            body = {"prompt": PROMPT, "max_tokens": 8}
            reply = httpx.post(box.url + "/generate", json=body, timeout=300)
            assert reply.status_code == 200 and reply.json()["text"], (start, reply.text)


def test_task_result_outlives_a_killed_container(image: str, volume: str) -> None:
    models = f"{REPO / 'models'}:/app/models:ro"
    data = f"{volume}:/app/data"
    with container(image, models, data) as box:
        body = {"prompt": PROMPT, "max_tokens": 16, "temperature": 0}
        task_id = httpx.post(box.url + "/send_text", json=body, timeout=60).json()["task_id"]
        deadline = time.monotonic() + 60
        while (record := httpx.get(f"{box.url}/get_task_status/{task_id}").json())[
            "status"
        ] != "done":
            assert time.monotonic() < deadline, record
            time.sleep(0.1)
        podman("kill", "--signal", "KILL", box.name)
    with container(image, models, data) as box:
        again = httpx.get(f"{box.url}/get_task_status/{task_id}").json()
    assert again["status"] == "done" and again["result"] == record["result"]
