"""
Which tests implement each entry of the test catalogue in
C{reliability.md} section (c): every test names its catalogue ids at the
start of the first line of its docstring (C{"S2, S3: ..."}), so the matrix
is found by reading the docstrings under C{tests/}; benchmark scripts that
name an id in their module docstring are listed too.  Run from the
repository root::

    python benchmarks/catalogue_matrix.py [--catalogue PATH] > matrix.md

Prints one Markdown row per id: the tests found (C{file::Class.test}), and a
status: covered, partly (why, from L{PARTLY}), not applicable (why, from
L{NOT_APPLICABLE}) or missing (with what is known, from L{MISSING}).
Exits with status 1 if an id is missing.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE = REPOSITORY.parent / "shared" / "reference" / "reliability.md"
_ID = r"[SHFCLZ][0-9]{1,2}"
#: The start of a tagged docstring: ids, then a colon.
_TAGS = re.compile(rf"^({_ID}(?:\s*,\s*{_ID})*)\s*:")
_ROW = re.compile(rf"^\|\s*({_ID})\s*\|")

#: Entries the implementation covers only in part, and why.
PARTLY: dict[str, str] = {
    "H6": "a header the upstream names in its Connection header is relayed:"
    " Twisted's HTTP client does not hand that Connection header over",
    "F9": "401/403 from an upstream count as failures (a bad injected key is"
    " the target's fault) instead of setting an auth_error state",
    "F11": "the escalation resets after a healthy spell as long as the last"
    " cooldown, not after a fixed 24 h",
    "F12": "targets out of rotation are still tried, soonest first, when every"
    " target is open; the reply then has x-should-retry: false",
    "F25": "simulated wall-clock jumps; a real suspend stops the monotonic"
    " clock, which lengthens a cooldown by the time suspended",
    "L2": "benchmarks/perf.py measures 1 KB, 100 KB and 1 MiB bodies (issue 8's"
    " sizes), not 10 KB and 10 MiB",
    "C11": "the mode file is replaced atomically; switching while ccrouter is"
    " stopped is allowed on purpose (it starts in that mode)",
}

#: Entries that do not apply to ccrouter, and why.
NOT_APPLICABLE: dict[str, str] = {
    "S18": "the token check (S7) does not depend on who calls; without a token,"
    " loopback is shared by every local user, as documented",
    "S19": "pip-audit needs a vulnerability database; the package index this"
    " project is built from does not serve one (every package reported"
    " 'could not be audited')",
}

#: What is known about entries still missing.
MISSING: dict[str, str] = {}


def catalogueIds(catalogue: Path) -> list[str]:
    """
    The ids of the catalogue's table rows, in order.
    """
    ids = []
    for line in catalogue.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match and match.group(1) not in ids:
            ids.append(match.group(1))
    return ids


def taggedTests(tests: Path) -> dict[str, list[str]]:
    """
    For each id, the tests whose docstring starts with it.
    """
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if not isinstance(
                    item, (ast.FunctionDef, ast.AsyncFunctionDef)
                ) or not item.name.startswith("test"):
                    continue
                docstring = (ast.get_docstring(item) or "").strip()
                match = _TAGS.match(docstring)
                if match is None:
                    continue
                where = f"{path.name}::{node.name}.{item.name}"
                for tag in re.split(r"\s*,\s*", match.group(1)):
                    found[tag].append(where)
    return found


def scripts(benchmarks: Path, known: list[str]) -> dict[str, list[str]]:
    """
    For each id, the benchmark scripts whose module docstring names it.
    """
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(benchmarks.glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        for tag in re.findall(rf"\b({_ID})\b", docstring or ""):
            if tag in known and path.name not in found[tag]:
                found[tag].append(f"benchmarks/{path.name}")
    return found


def matrix(catalogue: Path, tests: Path, benchmarks: Path) -> tuple[str, int]:
    """
    The Markdown matrix, and how many ids are missing.
    """
    ids = catalogueIds(catalogue)
    tagged = taggedTests(tests)
    runs = scripts(benchmarks, ids)
    lines = ["| id | test(s) found | status |", "|---|---|---|"]
    missing = 0
    for tag in ids:
        where = tagged.get(tag, []) + runs.get(tag, [])
        if where and tag in PARTLY:
            status = f"partly: {PARTLY[tag]}"
        elif where:
            status = "covered"
        elif tag in NOT_APPLICABLE:
            status = f"not applicable: {NOT_APPLICABLE[tag]}"
        else:
            status = "missing" + (f": {MISSING[tag]}" if tag in MISSING else "")
            missing += 1
        lines.append(f"| {tag} | {'<br>'.join(where) or '-'} | {status} |")
    unknown = sorted(set(tagged) - set(ids))
    if unknown:
        lines.append("")
        lines.append(f"Tags that are not catalogue ids: {', '.join(unknown)}")
    counts = defaultdict(int)
    for line in lines[2 : 2 + len(ids)]:
        counts[line.rsplit("|", 2)[1].strip().split(":")[0]] += 1
    lines.append("")
    lines.append(
        f"{len(ids)} ids: "
        + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    )
    return "\n".join(lines) + "\n", missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE)
    parser.add_argument("--tests", type=Path, default=REPOSITORY / "tests")
    parser.add_argument("--benchmarks", type=Path, default=REPOSITORY / "benchmarks")
    arguments = parser.parse_args(argv)
    text, missing = matrix(arguments.catalogue, arguments.tests, arguments.benchmarks)
    sys.stdout.write(text)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
