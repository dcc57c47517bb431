# -*- test-case-name: tests.test_failover -*-
"""
C{GET /health}: what state ccrouter is in and why, as JSON.  It names
files, modes, targets and reasons (upstreams by host and port); never an
upstream URL, a header value or a key.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from ccrouter import __version__
from ccrouter.breaker import State
from ccrouter.errors import ProxyError
from ccrouter.live import LiveState
from ccrouter.logs import logWriteErrors


def _timestamp(wall: float) -> str:
    moment = datetime.fromtimestamp(wall, tz=timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def healthReport(live: LiveState) -> dict[str, Any]:
    """
    The document C{/health} serves, as of now.
    """
    now, wall = live.now(), live.wallNow()
    config = live.config
    kinds = {
        target.name: target.kind for mode in config.modes for target in mode.failover
    }
    targets: dict[str, Any] = {}
    for name in live.board.names():
        breaker = live.board.get(name)
        assert breaker is not None
        report = breaker.report(now)
        failure = report.lastFailure
        targets[name] = {
            "kind": kinds.get(name),
            "state": report.state.value,
            "consecutive_failures": report.consecutiveFailures,
            "consecutive_timeouts": report.consecutiveTimeouts,
            "cooldown_remaining_seconds": round(report.cooldownRemaining, 3),
            "cooldown_until": (
                None
                if report.state is State.CLOSED
                else _timestamp(wall + report.cooldownRemaining)
            ),
            "cooldown_source": (
                None if report.cooldownSource is None else report.cooldownSource.value
            ),
            "next_cooldown_seconds": report.nextCooldown,
            "opens": report.opens,
            "probing": report.probing,
            "last_failure": (
                None
                if failure is None
                else {
                    "reason": failure.reason,
                    "at": _timestamp(wall - (now - failure.at)),
                    "seconds_ago": round(now - failure.at, 3),
                }
            ),
            "requests": report.requests,
            "failures": report.failures,
        }
    mode = live.mode
    autoSwitch = None
    if mode.failover:
        names = [target.name for target in mode.failover]
        current = names[live.board.pick(names, now)]
        autoSwitch = {
            "targets": names,
            "preferred": names[0],
            "current": current,
            "switched": current != names[0],
            "failovers": live.failovers,
        }
    reload = live.lastReload
    troubled = [
        target.name
        for target in mode.failover
        if targets[target.name]["state"] != State.CLOSED.value
    ]
    degraded = (
        bool(troubled)
        or live.modeProblem is not None
        or (reload is not None and reload.error is not None)
    )
    return {
        "status": "degraded" if degraded else "ok",
        "version": __version__,
        "pid": os.getpid(),
        "listen": list(live.listening or config.server.listen),
        "started_at": _timestamp(live.startedAt),
        "uptime_seconds": round(live.uptime, 3),
        "active_requests": len(live.inflight),
        "max_streams": config.server.limits.maxStreams,
        "log_write_errors": logWriteErrors(),
        "config": {
            "path": live.configPath,
            "loaded_at": _timestamp(live.loadedAt),
            "last_reload": (
                None
                if reload is None
                else {
                    "at": _timestamp(reload.at),
                    "ok": reload.error is None,
                    "error": reload.error,
                }
            ),
        },
        "mode": live.modeName,
        "mode_source": live.modeSource.value,
        "mode_file": live.modeFile,
        "mode_file_problem": live.modeProblem,
        "default_mode": config.defaultMode,
        "modes": [each.name for each in config.modes],
        "auto_switch": autoSwitch,
        "targets": targets,
    }


class ReadOnlyResource(Resource):
    """
    A leaf of ccrouter's own that answers C{GET} and C{HEAD} only.

    @cvar path: Where it is served, for the 405's message.
    """

    isLeaf = True
    path = "/"

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)  # type: ignore[attr-defined, no-any-return]

    def render(self, request: Request) -> bytes:
        if request.method in (b"GET", b"HEAD"):
            return super().render(request)  # type: ignore[no-any-return]
        error = ProxyError(
            405, "invalid_request_error", f"{self.path} only answers GET and HEAD"
        )
        request.setResponseCode(405)
        request.setHeader(b"allow", b"GET, HEAD")
        request.setHeader(b"content-type", b"application/json")
        return error.body()


def _jsonAnswer(request: Request, document: dict[str, Any]) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


class HealthResource(ReadOnlyResource):
    path = "/health"

    def __init__(self, live: LiveState) -> None:
        super().__init__()
        self._live = live

    def render_GET(self, request: Request) -> bytes:
        return _jsonAnswer(request, healthReport(self._live))


class StatusDataResource(ReadOnlyResource):
    """
    C{GET /status/data}: the recent requests, tokens per minute and totals
    the status page and C{ccrouter stats} show.
    """

    path = "/status/data"

    def __init__(self, live: LiveState) -> None:
        super().__init__()
        self._live = live

    def render_GET(self, request: Request) -> bytes:
        return _jsonAnswer(request, self._live.stats.statusData())
