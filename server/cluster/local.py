"""The deploy/ topology without containers: redis-server, two replicas and nginx on
loopback, everything under one temporary folder (``make cluster``; the cluster test),
with SMG, the cache-aware gateway, behind nginx's completion routes if asked for
(``make cluster GATEWAY=cache_aware``; the gateway test).

nginx runs deploy/nginx.conf itself, with only what differs on one host
rewritten: the upstream servers become the replicas' loopback ports, the listen
port a free one, and logs, pid and temporary files go under the folder; with the
gateway, deploy/nginx-gateway.conf is included, its address SMG's loopback port.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from server.cluster import gateway as smg
from server.cluster.redis_server import RedisProcess
from server.launcher import LiveServer, free_port, started

REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "deploy" / "nginx.conf"


@dataclass(slots=True)
class Cluster:
    folder: Path
    url: str  # nginx
    redis: RedisProcess
    replicas: list[LiveServer] = field(default_factory=list)
    nginx: subprocess.Popen[bytes] | None = None
    gateway: LiveServer | None = None  # SMG, when asked for
    gateway_metrics: str = ""  # SMG's Prometheus page

    @property
    def access_log(self) -> Path:
        return self.folder / "nginx" / "access.log"


def nginx_conf(replica_ports: list[int], port: int, folder: Path) -> str:
    """deploy/nginx.conf for loopback replicas, nginx's files under ``folder``."""
    text = NGINX_CONF.read_text()
    servers = re.findall(r"^\s*server replica\d+:\d+ (.*);$", text, re.M)
    assert servers, "deploy/nginx.conf lost its upstream server lines"
    lines = "".join(f"        server 127.0.0.1:{p} {servers[0]};\n" for p in replica_ports)
    text = re.sub(r"(^\s*server replica\d+:\d+ .*;\n)+", lines, text, flags=re.M)
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    text = text.replace("/var/log/nginx/access.log", str(folder / "access.log"))
    text = text.replace("/etc/nginx/edge-llm.d/", f"{folder / 'edge-llm.d'}/")
    paths = "".join(
        f"    {kind}_temp_path {folder / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + paths, 1)
    head = f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} info;\n"
    if os.geteuid() == 0:  # workers would run as nobody, who cannot write the folder
        head += "user root;\n"
    return head + text


def _start_nginx(cluster: Cluster, replica_ports: list[int]) -> None:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is not installed; `make cluster-deps` installs it")
    folder = cluster.folder / "nginx"
    (folder / "edge-llm.d").mkdir(parents=True, exist_ok=True)
    if cluster.gateway is not None:
        locations = smg.nginx_locations(cluster.gateway.url.removeprefix("http://"))
        (folder / "edge-llm.d" / "gateway.conf").write_text(locations)
    port = int(cluster.url.rsplit(":", 1)[1])
    (folder / "nginx.conf").write_text(nginx_conf(replica_ports, port, folder))
    cmd = [binary, "-p", str(folder), "-e", str(folder / "error.log")]
    cmd += ["-c", str(folder / "nginx.conf"), "-g", "daemon off;"]
    cluster.nginx = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(cluster.url + "/health_check", timeout=2).status_code == 200:
                return
        if cluster.nginx.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nginx did not start; see {folder / 'error.log'}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_cluster(
    config: Path,
    folder: Path,
    num_replicas: int = 2,
    env: dict[str, str] | None = None,
    gateway: str = "",
) -> Iterator[Cluster]:
    """Redis, ``num_replicas`` servers of ``config`` sharing it, nginx in front, and SMG
    with the policy ``gateway`` (e.g. ``cache_aware``) behind nginx's completion routes
    if one is named; all stopped (nginx first, then SMG, the replicas with SIGTERM, then
    Redis) when the block ends."""
    redis = RedisProcess(free_port(), folder / "redis")
    cluster = Cluster(folder, f"http://127.0.0.1:{free_port()}", redis)
    env = {**(env or {}), "EDGE_LLM_TASK_STORE": redis.url}
    with contextlib.ExitStack() as stack:
        redis.start()
        stack.callback(redis.stop)
        ports = []
        for i in range(num_replicas):
            port = free_port()
            replica_env = {**env, "EDGE_LLM_DATA_DIR": str(folder / f"replica{i + 1}")}
            cmd = [sys.executable, "-m", "server", "serve", "--config", str(config)]
            cmd += ["--port", str(port)]
            log = folder / f"replica{i + 1}.log"
            live = stack.enter_context(started(cmd, port, log, REPO, env=replica_env))
            cluster.replicas.append(live)
            ports.append(port)
        if gateway:
            _start_gateway(cluster, stack, gateway)
        try:
            _start_nginx(cluster, ports)
            yield cluster
        finally:
            if cluster.nginx is not None:
                cluster.nginx.terminate()
                try:
                    cluster.nginx.wait(10)
                except subprocess.TimeoutExpired:
                    cluster.nginx.kill()
                    cluster.nginx.wait()


def _start_gateway(cluster: Cluster, stack: contextlib.ExitStack, policy: str) -> None:
    """SMG on a free port; up once it has checked every replica (``/readiness``)."""
    port, metrics_port = free_port(), free_port()
    workers = [r.url for r in cluster.replicas]
    cmd = [smg.smg_binary(), *smg.smg_args(workers, "127.0.0.1", port, metrics_port, policy)]
    log = cluster.folder / "gateway.log"
    live = started(cmd, port, log, REPO, health="/readiness", env={"NO_COLOR": "1"})
    cluster.gateway = stack.enter_context(live)
    cluster.gateway_metrics = f"http://127.0.0.1:{metrics_port}/metrics"


def main() -> int:
    """``make cluster``: run until Ctrl-C or SIGTERM, then stop everything."""
    parser = argparse.ArgumentParser(prog="python -m server.cluster")
    parser.add_argument(
        "--gateway",
        choices=["", *smg.POLICIES],
        default="",
        help="SMG with this policy behind nginx's completion routes (default: none)",
    )
    args = parser.parse_args()
    config = Path(os.environ.get("EDGE_LLM_CONFIG", REPO / "config.json")).resolve()
    orjson.loads(config.read_bytes())  # a missing or broken config fails here, clearly
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="edge-llm-cluster-") as tmp:
        try:
            with running_cluster(config, Path(tmp), gateway=args.gateway) as cluster:
                print(f"nginx:    {cluster.url}", flush=True)
                if cluster.gateway is not None:
                    print(f"gateway:  {cluster.gateway.url} ({args.gateway})", flush=True)
                    print(f"          metrics {cluster.gateway_metrics}", flush=True)
                for i, replica in enumerate(cluster.replicas, 1):
                    print(f"replica{i}: {replica.url}", flush=True)
                print(f"redis:    {cluster.redis.url}\nfiles:    {tmp}", flush=True)
                print("Ctrl-C stops the cluster.", flush=True)
                stop.wait()
        except KeyboardInterrupt:
            pass
    print("cluster stopped", flush=True)
    return 0
