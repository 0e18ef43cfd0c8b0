"""Which of two GGUF files of one model decodes faster on this host: measured, not assumed.

``weights: "fastest"`` serves a Q4_1 (Q5_0, Q5_1) file as Q8_0 made from it, since
llama.cpp's CPU kernels for Q8_0 are faster. By how much depends on the CPU: Q8_0
decoded 1.3-1.5x faster on an AVX-512 host (2026-11-27), only 1.05-1.07x on an AMD
EPYC with AVX2 (2026-12-02), at +47 MB for the 135M model and without greedy
identity to the source. So a load decodes a batch of 16 sequences with each file, in
rounds whose order alternates (the machine's speed drifts and other processes
interrupt), and keeps the figures beside the conversion, keyed by the CPU and thread
count. The conversion is served only when it is at least ``MARGIN`` faster.

One noisy second must not decide for good (a compile beside the first load once made
the faster file look 0.65x and the slower one was served from then on). So each
record says how sure it is: the measuring thread's share of the wall time it ran
(another process taking the cores shows as a share well under 1) and the spread of the
rounds' ratios. A record that was not quiet, or whose ratios straddle the margin, is
measured again at the model's next loads (up to ``MAX_ATTEMPTS`` in all, keeping the
quietest), and ``/health_check`` shows all of it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import orjson

from batching.faults import FAULTS
from speculative import compute_threads
from speculative.llama import LlamaContext, LlamaModel

log = logging.getLogger(__name__)
BATCH = 16  # sequences decoded together: the server's default batch
ROUNDS = 8  # timed rounds (one decode of each file), after one untimed
MARGIN = 0.05  # the conversion must be this much faster to be worth its memory
QUIET_SHARE = 0.85  # the measuring thread ran at least this share of the wall time
MAX_ATTEMPTS = 3  # loads that measure while no record is sure


@dataclass(frozen=True, slots=True)
class Speeds:
    cpu: str  # the host it was measured on (see cpu_signature)
    threads: int
    source_tok_s: float  # from each file's fastest round
    converted_tok_s: float
    # the rounds' ratios (converted over source), lower and upper quartile
    ratio_low: float = 0.0
    ratio_high: float = 0.0
    cpu_share: float = 0.0  # 0 in a record made before it was measured: not known quiet
    attempts: int = 1

    @property
    def ratio(self) -> float:
        return self.converted_tok_s / self.source_tok_s if self.source_tok_s else 0.0

    @property
    def is_converted_faster(self) -> bool:
        return self.ratio >= 1 + MARGIN

    @property
    def is_quiet(self) -> bool:
        return self.cpu_share >= QUIET_SHARE

    @property
    def is_sure(self) -> bool:
        """Quiet, and every middle round agrees on which side of the margin it falls."""
        line = 1 + MARGIN
        return self.is_quiet and (self.ratio_low >= line or self.ratio_high < line)

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "ratio": round(self.ratio, 3),
            "quiet": self.is_quiet,
            "sure": self.is_sure,
        }


def cpu_signature() -> str:
    """The CPU's model name and a hash of its feature flags (Linux), else 'unknown'."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"

    def first(key: str) -> str:
        return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), "")

    flags = hashlib.sha256(first("flags").encode()).hexdigest()[:12]
    return f"{first('model name') or 'unknown'} / {flags}"


def measured(source: Path, converted: Path, threads: int) -> Speeds:
    """Both files' decode rates on this host: read from beside ``converted``, or measured
    now (a second or two for a small model) and written there. A record that is not sure
    is measured again, up to MAX_ATTEMPTS loads; the quietest measurement is kept."""
    record = converted.with_name(converted.name + ".speed.json")
    cpu = cpu_signature()
    kept: Speeds | None = None
    try:
        kept = Speeds(**orjson.loads(record.read_bytes()))
        if (kept.cpu, kept.threads) != (cpu, threads):
            kept = None  # another host's, or another thread count's
        elif kept.is_sure or kept.attempts >= MAX_ATTEMPTS:
            return kept
    except (OSError, ValueError, TypeError):
        pass  # none yet, or unreadable: measure
    speeds = measure(source, converted, threads, cpu, attempts=1 + (kept.attempts if kept else 0))
    log.info(
        "measured on this CPU: %s %.1f tok/s, %s %.1f tok/s (%.2fx, rounds %.2f-%.2fx, the "
        "measuring thread ran %.0f%% of the time%s)",
        source.name,
        speeds.source_tok_s,
        converted.name,
        speeds.converted_tok_s,
        speeds.ratio,
        speeds.ratio_low,
        speeds.ratio_high,
        100 * speeds.cpu_share,
        "" if speeds.is_sure else "; not sure: measured again at the next load",
    )
    if kept is not None and kept.cpu_share > speeds.cpu_share and not speeds.is_sure:
        speeds = replace(kept, attempts=speeds.attempts)  # the quieter one stands
    partial = record.with_name(record.name + ".partial")
    partial.write_bytes(orjson.dumps(asdict(speeds)))
    partial.replace(record)
    return speeds


def measure(source: Path, converted: Path, threads: int, cpu: str, attempts: int) -> Speeds:
    rounds = decode_rounds([source, converted], threads)
    best = [min(times[i] for times, _ in rounds) for i in range(2)]
    ratios = sorted(times[0] / times[1] for times, _ in rounds)
    share = sum(run for _, run in rounds) / sum(sum(times) for times, _ in rounds)
    quarter = len(ratios) // 4
    return Speeds(
        cpu,
        threads,
        round(BATCH / best[0], 1),
        round(BATCH / best[1], 1),
        ratio_low=round(ratios[quarter], 3),
        ratio_high=round(ratios[-1 - quarter], 3),
        cpu_share=round(min(1.0, share), 3),
        attempts=attempts,
    )


def decode_rounds(paths: list[Path], threads: int) -> list[tuple[list[float], float]]:
    """Per round, each file's time for a step of ``BATCH`` sequences decoding one token
    each (the order alternating between rounds, so a drift hits them alike), and the CPU
    time the measuring thread got in the round's steps."""
    opened: list[LlamaModel | LlamaContext] = []
    try:
        contexts = []
        for path in paths:
            model = LlamaModel(path)
            opened.append(model)
            context = LlamaContext(
                model, ctx_per_seq=64, num_seqs=BATCH, batch_tokens=BATCH, threads=threads
            )
            opened.append(context)
            contexts.append(context)
        seq_ids = list(range(BATCH))
        rounds = []
        for step in range(ROUNDS + 1):
            times = [0.0] * len(paths)
            ran = 0.0
            order = range(len(paths)) if step % 2 else reversed(range(len(paths)))
            for i in order:
                started, cpu = time.perf_counter(), time.thread_time()
                # any token will do: only the time is read
                contexts[i].decode([1] * BATCH, [step] * BATCH, seq_ids, [True] * BATCH)
                if i == len(paths) - 1:
                    FAULTS.delay("speed_noise")  # tests: the last file looks slow, and noisy
                times[i] = time.perf_counter() - started
                ran += time.thread_time() - cpu
            if step:  # the first decode pays one-time set-up
                rounds.append((times, ran))
        return rounds
    finally:
        for thing in reversed(opened):
            thing.close()
        compute_threads.release()  # decoded on a loader's thread: see compute_threads
