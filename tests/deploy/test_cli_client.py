"""examples/simple_tester.py, each subcommand against the live server."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

TESTER = str(REPO / "examples" / "simple_tester.py")


def run_tester(server: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, TESTER, "--url", server, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_health_check(server: str) -> None:
    out = run_tester(server, "health-check")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "ok"


def test_generate_plain_and_streamed_agree(server: str) -> None:
    args = (
        "generate",
        "--prompt",
        "What is the capital of France?",
        "--temperature",
        "0",
        "--max-tokens",
        "16",
    )
    plain = run_tester(server, *args)
    streamed = run_tester(server, *args, "--stream")
    assert plain.returncode == 0 and streamed.returncode == 0, plain.stderr + streamed.stderr
    assert "Paris" in plain.stdout
    assert streamed.stdout == plain.stdout


def test_send_text_then_status_then_tasks(server: str) -> None:
    sent = run_tester(server, "send-text", "--prompt", "Say hi.", "--max-tokens", "4")
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    status = run_tester(server, "get-task-status", "--task-id", task_id, "--wait")
    assert json.loads(status.stdout)["status"] == "done"
    listing = json.loads(run_tester(server, "tasks", "--per-page", "5").stdout)
    assert task_id in [t["task_id"] for t in listing["tasks"]]


def test_errors_are_reported_with_the_servers_message(server: str) -> None:
    out = run_tester(server, "get-task-status", "--task-id", "nope")
    assert out.returncode == 1
    assert "HTTP 404" in out.stderr and "no task 'nope'" in out.stderr
