"""The load generator, in a short run against the live server."""

from __future__ import annotations

from bench.loadgen import Job, long_prompt, run_load
from tests.conftest import DEFAULT_MODEL, SPECULATIVE_MODELS


async def test_short_run_reports_every_field(server: str) -> None:
    jobs = [Job(f"Write a sentence about {w}.", DEFAULT_MODEL) for w in ("tea", "rain", "owls")]
    report = await run_load(server, [*jobs, Job(long_prompt(200), DEFAULT_MODEL)], 2, 12, "t")
    assert report.requests == 4 and report.failed == 0
    assert 0 < report.generated_tokens <= 4 * 12
    assert report.tokens_per_second > 0 and report.requests_per_second > 0
    assert report.ttft_p50_ms is not None and report.ttft_p95_ms is not None
    assert 0 < report.ttft_p50_ms <= report.ttft_p95_ms
    assert report.itl_p50_ms is not None and report.itl_p95_ms is not None
    assert 0 < report.itl_p50_ms <= report.itl_p95_ms
    assert report.acceptance_rate is None  # no draft on this model


async def test_acceptance_is_reported_for_a_speculative_model(server: str) -> None:
    # the draft-model pair drafts at every step (adaptivity is off in the test config)
    jobs = [Job("Repeat exactly: one two three, one two three.", SPECULATIVE_MODELS[1])]
    report = await run_load(server, jobs, 1, 24, "spec")
    assert report.failed == 0
    assert report.drafted_tokens > 0 and report.acceptance_rate is not None


async def test_failures_are_counted_not_raised(server: str) -> None:
    report = await run_load(server, [Job("hi", "no-such-model")], 1, 4, "bad")
    assert report.failed == 1 and report.generated_tokens == 0
