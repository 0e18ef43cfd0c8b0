"""deploy/edge-llm.service: what restarts the server on a host without containers.

systemd reads it as an INI file; these checks hold it to what the reliability
promise needs (restart after a crash, a memory ceiling, a writable task
database), and systemd-analyze checks it where systemd is installed.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from server.settings import load_config
from tests.conftest import REPO

UNIT = REPO / "deploy" / "edge-llm.service"


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read(UNIT)
    return parser["Service"]


def environment() -> dict[str, str]:
    # configparser keeps only the last of repeated keys: read Environment= lines directly
    lines = [line for line in UNIT.read_text().splitlines() if line.startswith("Environment=")]
    return dict(line.removeprefix("Environment=").split("=", 1) for line in lines)


def test_the_unit_restarts_a_crashed_server_under_a_memory_ceiling() -> None:
    unit = service()
    assert unit["Restart"] == "on-failure"
    assert unit["MemoryMax"].rstrip("GMK").isdigit()
    assert unit["ExecStart"].split()[:2] == ["/usr/local/bin/edge-llm", "serve"]
    assert int(unit["TimeoutStopSec"]) > 30  # above the default drain_timeout_s


def test_the_unit_s_data_dir_is_the_state_directory(tmp_path: Path) -> None:
    """The settings read EDGE_LLM_DATA_DIR as the unit sets it: the task database lands
    in the one folder the sandboxed unit may write."""
    unit = service()
    env = environment()
    state = f"/var/lib/{unit['StateDirectory']}"
    assert env["EDGE_LLM_DATA_DIR"] == state and state in unit["ReadWritePaths"].split()
    config = tmp_path / "config.json"
    config.write_text((REPO / "config.json").read_text())
    assert load_config(config, env=env).server.data_dir == state


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify wants ExecStart to exist: point it at a real executable in a copy
    text = UNIT.read_text().replace("/usr/local/bin/edge-llm", "/bin/true")
    copy = tmp_path / "edge-llm.service"
    copy.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
