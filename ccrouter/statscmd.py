# -*- test-case-name: tests.test_statscmd -*-
"""
C{ccrouter stats}: tokens and requests per target and model since the proxy
started, and the recent requests C{ccrouter status} lists, both from the
proxy's C{/status/data}.

The document comes from whatever answers at the proxy's address, and its
model names from clients: every string is escaped before it reaches the
terminal, and every number is checked, so a hostile value can neither
drive the terminal nor crash the command.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any

from ccrouter.cli import FAILURE, OK, Context
from ccrouter.config import ConfigError
from ccrouter.control import (
    NotServedError,
    ProxyUnreachableError,
    fetchStatusData,
    loadConfig,
)
from ccrouter.daemon import currentAddress, runningPid
from ccrouter.logs import escapeControls

#: The most characters of one name (a model, a target) a line shows.
NAME_LIMIT = 48
#: The most targets of a failover path a line shows.
_PATH_LIMIT = 5


def _text(value: object, limit: int = NAME_LIMIT) -> str | None:
    """
    A string of the document as a terminal may show it: control and other
    invisible characters escaped, at most C{limit} characters; L{None} for
    anything that is not a string.
    """
    if not isinstance(value, str):
        return None
    shown = escapeControls(value)
    if len(shown) > limit:
        shown = shown[: limit - 3] + "..."
    return shown


#: Larger numbers are nonsense (a thousand years in milliseconds), and
#: would only push every other column off the screen.
_NUMBER_LIMIT = 10**15


def _number(value: object) -> float | None:
    """
    A plausible number of the document (JSON allows C{NaN} and C{Infinity}
    through Python's parser), or L{None}.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or abs(value) >= _NUMBER_LIMIT:
        return None
    return value


def _count(value: object) -> int | None:
    number = _number(value)
    return None if number is None else round(number)


def _thousands(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _elapsed(milliseconds: object) -> str:
    """
    A time in milliseconds as people read it: C{312 ms}, C{4.10 s}.
    """
    value = _number(milliseconds)
    if value is None:
        return "-"
    if value < 999.5:
        return f"{round(value)} ms"
    if value < 99_995:
        return f"{value / 1000:.2f} s"
    return f"{value / 1000:,.0f} s"


def _uptime(seconds: object) -> str:
    value = _number(seconds)
    if value is None or value < 0:
        return "an unknown time"
    whole = round(value)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _clock(at: object, zone: tzinfo | None) -> str:
    """
    The time of day of C{at} (ISO 8601, or seconds since the epoch) in
    C{zone}, the local time zone when L{None}.
    """
    try:
        if isinstance(at, str):
            text = at[:-1] + "+00:00" if at.endswith(("Z", "z")) else at
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
        else:
            seconds = _number(at)
            if seconds is None:
                return "--:--:--"
            moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
        return moment.astimezone(zone).strftime("%H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return "--:--:--"


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int]
) -> list[str]:
    """
    C{header} and C{rows} in aligned columns, those numbered in C{right}
    aligned to the right.
    """
    widths = [
        max(len(row[column]) for row in [header, *rows])
        for column in range(len(header))
    ]
    return [
        "  ".join(
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]


def _entries(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries = data.get(key)
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


_TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


def formatStats(data: dict[str, Any]) -> list[str]:
    """
    The C{totals} of a C{/status/data} document as a table, one row per
    target and model sorted by both, with a total row and the uptime.
    """
    lines = [f"ccrouter has been up {_uptime(data.get('uptime_seconds'))}"]
    totals = _entries(data, "totals")
    if not totals:
        lines.append("no requests yet")
        return lines
    lines[0] += "; requests and tokens since it started:"
    header = [
        "target",
        "model",
        "requests",
        "errors",
        "input",
        "output",
        "cache read",
        "cache write",
        "tokens",
    ]
    numbers = ("requests", "errors", *_TOKEN_KINDS)
    sums = dict.fromkeys((*numbers, "tokens"), 0)
    rows: list[tuple[str, str, list[str]]] = []
    for total in totals:
        counts = {name: _count(total.get(name)) for name in numbers}
        counts["tokens"] = sum(counts[kind] or 0 for kind in _TOKEN_KINDS)
        for name, value in counts.items():
            sums[name] += value or 0
        rows.append(
            (
                _text(total.get("target")) or "-",
                _text(total.get("model")) or "-",
                [_thousands(value) for value in counts.values()],
            )
        )
    rows.sort(key=lambda row: (row[0], row[1]))
    cells = [[target, model, *values] for target, model, values in rows]
    cells.append(["total", "", *(_thousands(value) for value in sums.values())])
    table = _table(header, cells, frozenset(range(2, len(header))))
    lines.extend("  " + line for line in table)
    return lines


def _models(entry: dict[str, Any]) -> str:
    client = _text(entry.get("client_model"))
    if client is None:
        # Not a message (a model list, say): the request itself says more.
        method, path = _text(entry.get("method"), 8), _text(entry.get("path"))
        if method is None and path is None:
            return "-"
        return f"{method or '-'} {path or '-'}"
    upstream = _text(entry.get("upstream_model"))
    if upstream is None or upstream == client:
        return client
    return f"{client} -> {upstream}"


def _target(entry: dict[str, Any]) -> str:
    target = _text(entry.get("target")) or "-"
    attempts = _count(entry.get("attempts"))
    path = entry.get("failover_path")
    if attempts is None or attempts < 2 or not isinstance(path, list) or not path:
        return target
    names = [_text(name) or "?" for name in path[:_PATH_LIMIT]]
    if len(path) > _PATH_LIMIT:
        names.append("...")
    return f"{target} (tried {' -> '.join(names)})"


def _tokens(entry: dict[str, Any]) -> str:
    given = _count(entry.get("input_tokens"))
    made = _count(entry.get("output_tokens"))
    if given is None and made is None:
        return "-"
    return f"{_thousands(given)} / {_thousands(made)}"


def _error(entry: dict[str, Any]) -> str:
    error = _text(entry.get("error"), 32)
    if error is not None:
        return error
    return "client gone" if entry.get("client_disconnected") is True else ""


def formatRecent(data: dict[str, Any], n: int, zone: tzinfo | None = None) -> list[str]:
    """
    The newest C{n} of the C{recent} requests of a C{/status/data}
    document, newest first, one line each, under a heading.

    @param zone: The time zone to show times in; the local one by default.
    """
    if n <= 0:
        return []
    recent = _entries(data, "recent")[:n]
    if not recent:
        return ["recent requests: none yet"]
    header = ["time", "status", "model", "target", "ttfb", "duration", "tokens in/out"]
    rows = []
    for entry in recent:
        status = _count(entry.get("status"))
        row = [
            _clock(entry.get("at"), zone),
            "-" if status is None else str(status),
            _models(entry),
            _target(entry),
            _elapsed(entry.get("ttfb_ms")),
            _elapsed(entry.get("duration_ms")),
            _tokens(entry),
        ]
        error = _error(entry)
        rows.append([*row, f"error: {error}" if error else ""])
    table = _table([*header, ""], rows, frozenset({1, 4, 5, 6}))
    return ["recent requests, newest first:", *("  " + line for line in table)]


def stats(context: Context, arguments: argparse.Namespace) -> int:
    """
    Print the running proxy's totals per target and model.
    """
    try:
        config = loadConfig(context, needsSecrets=False)
    except ConfigError as e:
        context.complain(str(e))
        return FAILURE
    pid = runningPid(context)
    address = currentAddress(context, config)
    try:
        data = fetchStatusData(address)
    except NotServedError as e:
        context.complain(str(e))
        return FAILURE
    except ProxyUnreachableError as e:
        if pid is None:
            context.say("ccrouter is not running")
        else:
            context.say(f"ccrouter is running (pid {pid}) but does not answer: {e}")
        return FAILURE
    if arguments.json:
        # ASCII-only JSON: a model name cannot carry an escape sequence.
        totals = data.get("totals")
        context.say(
            json.dumps(
                totals if isinstance(totals, list) else [], indent=2, ensure_ascii=True
            )
        )
        return OK
    for line in formatStats(data):
        context.say(line)
    return OK
