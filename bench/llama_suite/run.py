"""Run llama.cpp's own server tests against this server or llama-server; count outcomes.

    .venv/bin/python -m bench.llama_suite.run [--target edge|llama-server] [--compare]

The 14 files not marked slow that the issue names, run by the suite's own
pytest set-up (its conftest starts the server per test through
``bench/llama_suite/llama-server``, see shim.py). Each test's outcome is
written to ``bench/results/llama-suite-<target>.json``; ``--compare`` lists
the tests that pass on llama-server and not here, from the two files.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]
FILES = (
    *("basic", "chat_completion", "completion", "tokenize", "stream", "embedding"),
    *("security", "compat_oai_responses", "compat_anthropic", "ignore_eos", "infill"),
    *("rerank", "metrics", "tool_call"),
)
RESULTS = REPO / "bench" / "results"


def suite_dir() -> Path:
    if "LLAMA_SUITE_DIR" in os.environ:
        return Path(os.environ["LLAMA_SUITE_DIR"])
    pattern = "build/llama-server/llama_cpp_python-*/vendor/llama.cpp/tools/server/tests"
    found = sorted(glob.glob(str(REPO / pattern)))
    if not found:
        sys.exit("no llama.cpp server tests under build/llama-server: run `make llama-server`")
    return Path(found[-1])


def run(target: str, suite: Path, files: list[str], extra: list[str]) -> dict[str, str]:
    """pytest over ``files``; test id -> passed, failed or skipped."""
    report = Path(tempfile.mkdtemp(prefix="llama-suite-")) / "junit.xml"
    env = dict(os.environ, LLAMA_SUITE_TARGET=target)
    env["LLAMA_SERVER_BIN_PATH"] = str(REPO / "bench" / "llama_suite" / "llama-server")
    env.setdefault("LLAMA_SUITE_REAL_BIN", str(REPO / "build" / "llama-server" / "llama-server"))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *(f if "::" in f else f"unit/test_{f}.py" for f in files),
    ]
    cmd += ["-m", "not slow", "-v", "-p", "no:randomly", "-p", "no:cacheprovider"]
    cmd += ["-p", "no:xdist", f"--junitxml={report}", *extra]
    subprocess.run(cmd, cwd=suite, env=env, check=False)
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcomes[name] = (
            "failed"
            if kinds & {"failure", "error"}
            else "skipped"
            if "skipped" in kinds
            else "passed"
        )
    return outcomes


def load(target: str) -> dict[str, str]:
    """A target's saved outcomes, its parts' (``--part``) merged."""
    outcomes: dict[str, str] = {}
    for path in sorted(RESULTS.glob(f"llama-suite-{target}*.json")):
        outcomes |= orjson.loads(path.read_bytes())
    return outcomes


def counts(outcomes: dict[str, str]) -> str:
    ran = [o for o in outcomes.values() if o != "skipped"]
    return f"{ran.count('passed')} passed of {len(ran)} run ({len(outcomes) - len(ran)} skipped)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", choices=("edge", "llama-server"), default="edge")
    p.add_argument("--files", nargs="*", default=list(FILES))
    p.add_argument("--part", help="a name for this selection's results, to run parts side by side")
    p.add_argument(
        "--not-passed-on",
        choices=("edge", "llama-server"),
        help="run only the tests that did not pass on that target (from its saved results)",
    )
    p.add_argument("--compare", action="store_true", help="only compare the saved results")
    args, extra = p.parse_known_args()
    if not args.compare:
        files = args.files
        if args.not_passed_on:  # as node ids: test_basic::test_x[a] -> unit/test_basic.py::...
            earlier = load(args.not_passed_on).items()
            files = [f"unit/{n.replace('::', '.py::', 1)}" for n, o in earlier if o != "passed"]
        outcomes = run(args.target, suite_dir(), files, extra)
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"llama-suite-{args.target}{'.' + args.part if args.part else ''}.json"
        out.write_bytes(orjson.dumps(outcomes, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        print(f"{args.target}: {counts(outcomes)}; outcomes in {out.relative_to(REPO)}")
        return
    saved = {t: load(t) for t in ("llama-server", "edge")}
    for target, outcomes in saved.items():
        print(f"{target}: {counts(outcomes)}")
    real, edge = saved["llama-server"], saved["edge"]
    for kind, names in (
        ("pass on llama-server, not here", _only(real, edge)),
        ("pass here, not on llama-server", _only(edge, real)),
    ):
        print(f"\n{len(names)} {kind}:")
        print("\n".join(f"  {n}" for n in sorted(names)))


def _only(passing: dict[str, str], other: dict[str, str]) -> list[str]:
    """Passed in one, failed in the other (a test one of them did not run is left out)."""
    return [n for n, o in passing.items() if o == "passed" and other.get(n) == "failed"]


if __name__ == "__main__":
    main()
