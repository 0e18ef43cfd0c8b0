"""The task store on a full disk (server/tasks/sqlite_store.py), for real: the data folder
is a small tmpfs, filled while tasks run. New tasks are refused with a 507 (none
accepted unrecorded), running ones finish and are answered from memory, their endings
are written once space returns, and the database passes SQLite's integrity check."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    arm_fault,
    config_variant,
    running_server,
    wait_for_status,
    wait_until,
)

TASK = {"prompt": "List the numbers from 1 to 100.", "max_tokens": 24, "temperature": 0}


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write until the disk is full; the filler is returned to be deleted."""
    filler = folder / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


def rows(database: Path) -> dict[str, tuple[str, str | None]]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {i: (s, r) for i, s, r in db.execute("SELECT id, status, result FROM tasks")}


async def test_a_full_disk_refuses_new_tasks_and_loses_no_accepted_one(
    test_config: Path, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "data", "8m") as data:
        config = config_variant(test_config, tmp_path)  # data_dir: tmp_path / "data"
        with running_server(config, name="full-disk", env={"EDGE_LLM_FAULTS": ""}) as url:
            async with httpx.AsyncClient(base_url=url, timeout=120) as client:
                await arm_fault(client, "step_delay", None, 0.1)  # they outlast the filling
                accepted = []
                for n in range(3):
                    reply = await client.post("/send_text", json=TASK | {"prompt": f"{n}"})
                    assert reply.status_code == 202, reply.text
                    accepted.append(reply.json()["task_id"])
                filler = fill(data)
                refused = await client.post("/send_text", json=TASK)
                assert refused.status_code == 507, refused.text
                assert "no task was accepted" in refused.json()["error"]["message"]
                assert refused.headers["retry-after"]
                # the disk is full, generation is not
                assert (
                    await client.post("/debug/faults", json={"disarm": "step_delay"})
                ).is_success
                served = await client.post("/generate", json=TASK | {"max_tokens": 2})
                assert served.status_code == 200, served.text
                # accepted tasks finish and are answered, from memory while the disk is full
                done = [await wait_for_status(client, i, "done", within=120) for i in accepted]
                assert all(r["result"]["text"] for r in done)
                on_disk = rows(data / "tasks.sqlite3")
                assert all(on_disk[i][0] in ("queued", "running") for i in accepted), on_disk
                filler.unlink()
                # space is back: the next store call writes the endings
                await wait_until(
                    lambda: client.get("/tasks/"),
                    lambda _: all(rows(data / "tasks.sqlite3")[i][0] == "done" for i in accepted),
                    what="endings written",
                )
                again = [await wait_for_status(client, i, "done") for i in accepted]
                assert [r["result"] for r in again] == [r["result"] for r in done]
                reply = await client.post("/send_text", json=TASK)
                assert reply.status_code == 202, reply.text
                await wait_for_status(client, reply.json()["task_id"], "done", within=120)
        assert set(rows(data / "tasks.sqlite3")) >= set(accepted)
