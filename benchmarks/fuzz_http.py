"""
Z1 on demand: raw request bytes into the real HTTP channel, the resource
tree and a recording agent in place of the upstreams
(L{tests.httpharness}), with the same oracle as the hypothesis property in
C{tests/test_fuzz.py}: every answer starts with C{HTTP/1.1 } (C{HTTP/1.0 }
for an HTTP/1.0 request) or there is none, nothing is logged as an
unhandled error, and the upstream is reached only for well-formed requests
to allowed paths, with clean outbound headers and the right credentials.

Driven by atheris (coverage-guided, from a seed corpus of reliability.md
appendix A and real Claude Code requests) when it is installed; atheris is
not a dependency of ccrouter::

    .venv/bin/pip install atheris
    .venv/bin/python benchmarks/fuzz_http.py --seconds 600

Without atheris, or with C{--hypothesis}, hypothesis'
C{fuzz_one_input} drives the seed mutator of L{tests.httpharness} with
random bytes for the same time.  An input that breaks the oracle (or
raises) is written to C{--out} (default C{bench/fuzz-http/}) as
C{crash-<sha1>.bin}, with what the oracle found in C{crash-<sha1>.txt},
and the script exits with status 1: turn it into a regression test with an
C{@example} on the property in C{tests/test_fuzz.py}.  With atheris, the
corpus it grows is kept in C{--out}/corpus for the next run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.logger import (
    LogEvent,
    formatEvent,
    globalLogBeginner,
)

try:
    import atheris  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the machine
    atheris = None


class _Failures:
    """
    Keeps the unhandled errors logged while one input runs; drops the rest
    (warnings about refused requests are expected by the thousand).
    """

    def __init__(self) -> None:
        self.events: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        if "log_failure" in event:
            self.events.append(
                formatEvent(event) + "\n" + event["log_failure"].getTraceback()
            )


FAILURES = _Failures()


def check(raw: bytes) -> list[str]:
    """
    Everything wrong with how ccrouter handles C{raw}.
    """
    from tests.httpharness import fuzzOneInput

    del FAILURES.events[:]
    problems = fuzzOneInput(raw)
    return problems + [f"logged: {event}" for event in FAILURES.events]


def save(out: Path, raw: bytes, problems: list[str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"crash-{hashlib.sha1(raw).hexdigest()}.bin"  # noqa: S324
    path.write_bytes(raw)
    path.with_suffix(".txt").write_text("\n".join(problems) + "\n")
    return path


def runAtheris(arguments: argparse.Namespace) -> int:
    from tests.httpharness import SEEDS

    out: Path = arguments.out
    # libFuzzer adds what it finds to the corpus: kept between runs.
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(SEEDS):
        (corpus / f"seed-{index}").write_bytes(seed)

    def testOneInput(raw: bytes) -> None:
        problems = check(raw)
        if problems:
            path = save(out, raw, problems)
            raise AssertionError(f"{path}: {problems}")

    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={int(arguments.seconds)}",
            f"-artifact_prefix={out}/",
            "-max_len=20000",
            "-print_final_stats=1",
            str(corpus),
        ],
        testOneInput,
    )
    atheris.Fuzz()
    return 0


def runHypothesis(arguments: argparse.Namespace) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.httpharness import HTTPHarness, checkExchange, mutatedRequests

    found: list[tuple[bytes, list[str]]] = []

    @settings(database=None, suppress_health_check=list(HealthCheck), deadline=None)
    @given(mutatedRequests(), st.booleans())
    def one(fed: tuple[bytes, list[int]], token: bool) -> None:
        raw, cuts = fed
        del FAILURES.events[:]
        harness = HTTPHarness(token=token)
        problems = checkExchange(harness, raw, harness.feed(raw, cuts))
        problems += [f"logged: {event}" for event in FAILURES.events]
        if problems:
            found.append((raw, problems))
            raise AssertionError(problems)

    fuzz: Any = one.hypothesis.fuzz_one_input  # type: ignore[attr-defined]
    deadline = time.monotonic() + arguments.seconds
    runs = 0
    while time.monotonic() < deadline:
        runs += 1
        try:
            fuzz(os.urandom(4096))
        except Exception:  # noqa: BLE001 - every failure is reported below
            raw, problems = found[-1] if found else (b"", ["raised"])
            print(f"crash: {save(arguments.out, raw, problems)}: {problems}")
            return 1
    print(f"hypothesis: {runs} inputs in {arguments.seconds:g} s, 0 failures")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--out", type=Path, default=Path("bench/fuzz-http"))
    parser.add_argument(
        "--hypothesis",
        action="store_true",
        help="use hypothesis even when atheris is installed",
    )
    arguments = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([FAILURES], redirectStandardIO=False)
    if atheris is None or arguments.hypothesis:
        if atheris is None:
            print("atheris is not installed: fuzzing with hypothesis instead")
        return runHypothesis(arguments)
    with atheris.instrument_imports(include=["ccrouter", "twisted.web", "tests"]):
        for name in ("ccrouter.root", "ccrouter.server", "tests.httpharness"):
            importlib.import_module(name)
    return runAtheris(arguments)


if __name__ == "__main__":
    sys.exit(main())
