"""Property-based fuzzing of every route from the server's own /openapi.json.

Schemathesis generates, per operation, bodies, query strings and path
parameters that fit the schemas the routes validate with (positive cases: never
a 5xx) and that break them (negative cases: a 4xx, never a 5xx, never a 2xx
for data the schema forbids). The server under test caps max_tokens at 8 and
its models' context at 256 tokens so that generation requests stay quick;
``FUZZ_EXAMPLES`` cases per operation and mode (25 by default) keep CI short.

Reproducing a failure: the run is seeded (``FUZZ_SEED``, 18 by default), and
every failing case is saved in ``.hypothesis/fuzz/`` (git-ignored), which the
next run replays first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from server.app import api_description
from server.serving.limits import MAX_ASKED_TOKENS
from tests.conftest import REPO, running_server, shipped_config, write_config

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("FUZZ_SEED", "18"))
DATABASE = REPO / ".hypothesis" / "fuzz"
# a negative case that the server accepted is a failure only if it got a 4xx...
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": ["4xx"]}}}
)
# (method, path, mode): every operation gets valid cases; those with a body get invalid
# ones too (the others take only free-form strings, ids and names: nothing to break)
CASES = [
    (method.upper(), path, mode)
    for path, operations in api_description()["paths"].items()
    for method, operation in operations.items()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or "requestBody" in operation
]


def quick(case: schemathesis.Case) -> schemathesis.Case:  # type: ignore[type-arg]
    """Ask for at most 8 tokens: a valid max_tokens is lowered, a missing one set.

    Generation stays fast, and the server's max_tokens_limit (8) never refuses a case
    for a reason other than the one it was built with: a negative case breaks one
    part of the request, and a valid max_tokens is not that part.
    """
    if isinstance(case.body, dict) and case.method == "POST":
        for field in ("max_tokens", "max_completion_tokens"):
            value = case.body.get(field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if float(value).is_integer() and 1 <= value <= MAX_ASKED_TOKENS:  # 8.0 is an integer
                case.body[field] = min(int(value), 8)
        case.body.setdefault("max_tokens", 8)
    return case


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fuzz")
    config = shipped_config(folder, max_tokens_limit=8)
    for model in config["models"].values():
        model["context_size"] = 256  # a long generated prompt is refused, not fed for seconds
    with running_server(write_config(folder, config), name="fuzz-server") as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(fuzz_server: str) -> schemathesis.BaseSchema:
    # what the server serves is what the operations below were listed from
    assert httpx.get(fuzz_server + "/openapi.json").json() == api_description()
    return schemathesis.openapi.from_url(fuzz_server + "/openapi.json", config=CONFIG)


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_5xx_and_invalid_input_is_refused(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{mode} {method} {path}").strip("-")

    # @settings outside @seed: the seed fixes what is generated, and failures are still
    # saved to the database (under it, @seed would turn the database off)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=DirectoryBasedExampleDatabase(DATABASE / name),
        # generating a case may be slow on a loaded machine; every other check stays on
        suppress_health_check=[HealthCheck.too_slow],
    )
    @seed(SEED)
    @given(case=operation.as_strategy(generation_mode=mode).map(quick))
    def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
        response = case.call(timeout=120)
        # the one 5xx a client can choose: a `timeout` it set too short (documented 504)
        chose_timeout = response.status_code == 504 and "deadline" in response.text
        assert response.status_code < 500 or chose_timeout, (
            case.method,
            case.path,
            case.body,
            response.text[:500],
        )
        if mode is GenerationMode.NEGATIVE:
            # ...unless the broken part cannot be told from valid data once sent (a
            # schemathesis judgement: an extra query parameter, a string of digits)
            case.validate_response(response, checks=[negative_data_rejection])

    check()
