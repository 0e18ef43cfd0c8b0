"""The images against the same server outside a container: size, start to healthy, tokens/s.

    make container-build container-build-python
    .venv/bin/python -m bench.containers [--starts 3] [--runs 3]

Forms: ``python -m server`` and ``dist/edge-llm`` on the host, the default image (the
binary's folder FROM scratch) and the Python one, each serving the repo's models (a
read-only mount for the images) with one llama.cpp thread. Start to healthy: from
launch (``podman run -d``) to /health_check answering 200; the health check's own
cost is timed apart (``podman healthcheck run``, which execs the image's command).
Tokens/s: the server's own decode rate (``timings.tokens_per_second``) of a greedy
128-token reply, median of ``--runs``. Writes ``bench/results/containers.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import orjson

from bench.report import REPO, RESULTS, write_table
from server.launcher import free_port

ENV = {
    **os.environ,
    "CONTAINERS_CONF": os.environ.get(
        "CONTAINERS_CONF", str(REPO / "packaging" / "container" / "containers.conf")
    ),
}
BODY = {"prompt": "Tell a long story about a dragon.", "max_tokens": 128, "temperature": 0}


def podman(*args: str) -> str:
    done = subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@contextlib.contextmanager
def launched(form: str, port: int) -> Iterator[str | None]:
    """Start one form on ``port``; yield its container's name (None: a host process)."""
    env = {"EDGE_LLM_PORT": str(port), "EDGE_LLM_THREADS": "1"}
    if form.startswith("localhost/"):
        name = f"edge-bench-{port}"
        flags = [f"--env={k}={v}" for k, v in env.items()]
        podman("run", "-d", "--name", name, "--network=host", *flags,
               f"--volume={REPO / 'models'}:/app/models:ro", form)  # fmt: skip
        try:
            yield name
        finally:
            podman("rm", "-f", "-v", "-t", "5", name)
        return
    cmd = [sys.executable, "-m", "server"] if form == "source" else [str(REPO / form)]
    proc = subprocess.Popen(
        [*cmd, "serve", "--config", str(REPO / "config.json")],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield None
    finally:
        proc.terminate()
        proc.wait(60)


def healthy_within(url: str, begin: float) -> float:
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/health_check", timeout=1).status_code == 200:
                return time.monotonic() - begin
        assert time.monotonic() - begin < 120, "not healthy within 120 s"
        time.sleep(0.02)


def measure(form: str, starts: int, runs: int) -> dict[str, object]:
    healthy, check, rates = [], [], []
    for i in range(starts):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        begin = time.monotonic()
        with launched(form, port) as name:
            healthy.append(healthy_within(url, begin))
            if name is not None:
                asked = time.monotonic()
                podman("healthcheck", "run", name)
                check.append(time.monotonic() - asked)
            if i == 0:
                for _ in range(runs + 1):  # the first loads the model
                    reply = httpx.post(
                        url + "/generate", json={**BODY, "cache": False}, timeout=300
                    )
                    rates.append(reply.json()["timings"]["tokens_per_second"])
    row: dict[str, object] = {
        "form": form,
        "healthy_s": round(statistics.median(healthy), 2),
        "health_check_s": round(statistics.median(check), 2) if check else None,
        "tokens_per_s": round(statistics.median(rates[1:]), 1),
    }
    if form.startswith("localhost/"):
        row["size_mb"] = round(int(podman("image", "inspect", "--format", "{{.Size}}", form)) / 1e6)
    else:
        target = REPO / "dist" / "edge-llm"
        row["size_mb"] = round(target.stat().st_size / 1e6) if form != "source" else None
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=3, help="starts per form (median)")
    parser.add_argument("--runs", type=int, default=3, help="timed replies (median)")
    parser.add_argument("--forms", nargs="*", help="only these forms")
    args = parser.parse_args()
    forms = args.forms or [
        "source",
        "dist/edge-llm",
        "localhost/edge-llm-server",
        "localhost/edge-llm-server-python",
    ]
    rows = [measure(form, args.starts, args.runs) for form in forms]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "containers.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    lines = [
        "| form | size MB | start to healthy s | health check s | tokens/s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['form']} | {r['size_mb'] or '-'} | {r['healthy_s']} | {r['health_check_s'] or '-'} "
        f"| {r['tokens_per_s']} |"
        for r in rows
    ]
    write_table("containers", lines)


if __name__ == "__main__":
    main()
