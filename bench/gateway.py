"""The chat workload across 2 replicas: SMG round-robin against SMG cache-aware.

``bench.chat``'s conversations (8 concurrent, 6 turns, each turn the whole history plus
~180 tokens, 64 new tokens, streamed, greedy) sent through ``make cluster``'s topology
on loopback: Redis, 2 replicas of one llama.cpp thread each (the 2 cores here), nginx,
and SMG behind nginx's completion routes. Each policy gets a fresh cluster, so every run
starts with cold prefix caches; the only difference between runs is SMG's policy:

- ``round_robin``: turn N of a conversation lands on either replica, so half the time
  on one that never saw its history and must prefill all of it;
- ``cache_aware``: turn N goes to the replica holding the longest prefix of its prompt.

Reported: wall time, generated tokens/s, TTFT of turn 1 and of later turns (p50/p95),
the prompt tokens the replicas took from their prefix caches (their
``edge_llm_prompt_tokens_reused_total``), and the ratios cache-aware / round-robin.

    .venv/bin/python -m bench.gateway [--conversations 8] [--turns 6]
        [--policies round_robin,cache_aware]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.chat import MAX_TOKENS, Run, p, run_all
from bench.report import REPO, write_table
from server.cluster.local import Cluster, running_cluster

MODEL = "smollm2-135m"


def cluster_config(folder: Path) -> Path:
    """config.json as shipped, model paths absolute, one thread a replica, no result
    cache (a replayed answer would hide the prefill this measures)."""
    config = orjson.loads((REPO / "config.json").read_bytes())
    for model in config["models"].values():
        model["path"] = str(REPO / model["path"])
    config["server"] |= {"threads": 1, "result_cache": {"enabled": False}}
    path = folder / "config.json"
    path.write_bytes(orjson.dumps(config))
    return path


async def reused(cluster: Cluster) -> list[float]:
    """Each replica's prefix-hit counter."""
    counts = []
    async with httpx.AsyncClient(timeout=60) as http:
        for replica in cluster.replicas:
            text = (await http.get(replica.url + "/metrics")).text
            samples = [
                s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "edge_llm_prompt_tokens_reused_total"
            ]
            counts.append(sum(samples))
    return counts


async def warm(cluster: Cluster) -> None:
    """Both replicas load the model before the clock starts."""
    async with httpx.AsyncClient(timeout=300) as http:
        for replica in cluster.replicas:
            body = {"prompt": "Hi", "max_tokens": 1, "model_name": MODEL}
            (await http.post(replica.url + "/generate", json=body)).raise_for_status()


def run_policy(policy: str, conversations: int, turns: int) -> tuple[Run, list[float]]:
    run = Run(policy)
    with tempfile.TemporaryDirectory(prefix=f"edge-llm-bench-{policy}-") as tmp:
        folder = Path(tmp)
        config = cluster_config(folder)
        with running_cluster(config, folder / "cluster", gateway=policy) as cluster:
            asyncio.run(warm(cluster))
            before = asyncio.run(reused(cluster))
            # SMG routes by the request's model: it must be named
            extra = {"model": MODEL}
            asyncio.run(run_all(cluster.url, run, conversations, turns, extra, policy.title()))
            after = asyncio.run(reused(cluster))
    return run, [b - a for a, b in zip(before, after, strict=True)]


def later(run: Run) -> list[float]:
    return [s for t, values in run.ttfts.items() if t > 1 for s in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--policies", default="round_robin,cache_aware")
    args = parser.parse_args()
    policies = args.policies.split(",")
    results = [run_policy(policy, args.conversations, args.turns) for policy in policies]
    rows = [
        f"{args.conversations} concurrent conversations x {args.turns} turns, greedy, "
        f"{MAX_TOKENS} new tokens per turn, 2 replicas of 1 thread behind nginx + SMG, "
        "`python -m bench.gateway`.",
        "",
        "| SMG policy | wall s | generated tok/s | turn-1 TTFT p50 ms | later-turn TTFT p50 / "
        "p95 ms | cached prompt tokens per replica |",
        "|---|---|---|---|---|---|",
    ]
    for run, cached in results:
        rest = later(run)
        rate = run.tokens / run.seconds if run.seconds else 0.0
        first = p(run.ttfts[1], 0.5) * 1000
        rows.append(
            f"| {run.name} | {run.seconds:.1f} | {rate:.1f} | {first:.0f} | "
            f"{p(rest, 0.5) * 1000:.0f} / {p(rest, 0.95) * 1000:.0f} | "
            f"{' / '.join(f'{c:.0f}' for c in cached)} |"
            if rest
            else f"| {run.name} | {run.seconds:.1f} | {rate:.1f} | {first:.0f} | - | - |"
        )
    if len(results) == 2 and later(results[0][0]) and later(results[1][0]):
        (base, _), (new, _) = results
        rows += [
            "",
            f"{new.name} / {base.name}: wall time {base.seconds / new.seconds:.2f}x faster, "
            f"later-turn TTFT p50 {p(later(new), 0.5) / p(later(base), 0.5):.2f}x.",
        ]
    write_table("gateway", rows)


if __name__ == "__main__":
    main()
