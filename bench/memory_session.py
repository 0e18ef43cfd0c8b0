"""Memory over a scripted session, and footprint estimates against measurements.

A server with three models and a budget for two (shipped contexts, 16 x 2048
tokens): load A, load B, load C (A, the least recently used, is evicted),
then idle until the keep-alive (5 s here) unloads B and C. RSS after each step
comes from /health_check. Then, in this process, every shipped model's
footprint estimate (from its GGUF header) against what llama.cpp allocates.

    .venv/bin/python -m bench.memory_session
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import llama_cpp._logger
import orjson

from bench.report import REPO, write_table
from server.launcher import free_port, started
from server.models.loader import estimate_footprint, load_blocking
from server.settings import load_config

MODELS = {"A": "smollm2-135m", "B": "smollm2-135m-q2", "C": "smollm2-135m-q8"}
BUDGET_MB = 2200
KEEP_ALIVE_S = 5
MB = 1 << 20


def session(config_path: Path) -> list[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "server", "serve", "--config", str(config_path)]
    rows = ["| step | loaded | used MB | RSS MB |", "|---|---|---|---|"]
    log = config_path.parent / "server.log"
    with started([*cmd, "--port", str(port)], port, log, REPO) as live:
        client = httpx.Client(base_url=live.url, timeout=300)

        def record(step: str) -> None:
            body: dict[str, Any] = client.get("/health_check").json()
            memory = body["memory"]
            rows.append(
                f"| {step} | {', '.join(body['loaded_models']) or '-'} "
                f"| {memory['used_bytes'] / MB:.0f} | {memory['rss_bytes'] / MB:.0f} |"
            )

        record("start")
        for label, name in MODELS.items():
            body = {"prompt": "Say hi.", "model_name": name, "max_tokens": 8, "temperature": 0}
            assert client.post("/generate", json=body).status_code == 200
            record(f"load {label} ({name})")
        time.sleep(KEEP_ALIVE_S + 1.5)
        record(f"idle {KEEP_ALIVE_S + 1.5:.1f} s")
    return rows


def estimates(config_path: Path) -> list[str]:
    config = load_config(config_path)
    rows = ["| model | estimate MB | measured MB | KV est / measured MB |", "|---|---|---|---|"]
    for name in config.models:
        estimate = estimate_footprint(config, name)
        model, context, proposer, measured = load_blocking(config, name)
        context.close()
        if proposer is not None:
            proposer.close()
        model.close()
        rows.append(
            f"| {name} | {estimate.total_bytes / MB:.0f} | {measured.total_bytes / MB:.0f} "
            f"| {estimate.kv_bytes / MB:.0f} / {measured.kv_bytes / MB:.0f} |"
        )
    return rows


def main() -> None:
    llama_cpp._logger.set_verbose(False)
    with tempfile.TemporaryDirectory() as folder:
        config: dict[str, Any] = orjson.loads((REPO / "config.json").read_bytes())
        for model in config["models"].values():
            model["path"] = str(REPO / model["path"])
        config["server"] |= {
            "threads": 1,
            "data_dir": folder,
            "memory_budget_mb": BUDGET_MB,
            "keep_alive": KEEP_ALIVE_S,
        }
        config["models"]["smollm2-135m-q8"].pop("draft", None)  # three plain models
        path = Path(folder) / "config.json"
        path.write_bytes(orjson.dumps(config))
        rows = [f"Budget {BUDGET_MB} MB, keep_alive {KEEP_ALIVE_S} s, 1 thread", ""]
        rows += session(path)
        rows += ["", "Footprint before loading (estimate) vs llama.cpp's buffers", ""]
        rows += estimates(path)
    write_table("memory_session", rows)


if __name__ == "__main__":
    main()
