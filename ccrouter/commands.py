# -*- test-case-name: tests.test_daemon -*-
"""
Commands about routing: C{mode} (print or switch), C{health} and
C{explain}.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import time
from typing import Any

from ccrouter.breaker import BreakerBoard
from ccrouter.cli import FAILURE, OK, SHORTCUTS, USAGE, Context
from ccrouter.config import Config, ConfigError
from ccrouter.control import (
    ProxyUnreachableError,
    fetchHealth,
    loadConfig,
)
from ccrouter.daemon import currentAddress, describeHealth
from ccrouter.files import replaceFile
from ccrouter.live import BREAKER_STATE_NAME
from ccrouter.modes import readModeFile
from ccrouter.routing import planRequest
from ccrouter.state import loadBoard

#: How long C{ccrouter mode NAME} waits to see the daemon switch.
_SWITCH_WAIT = 3.0


def _config(context: Context) -> Config | None:
    try:
        return loadConfig(context, needsSecrets=False)
    except ConfigError as e:
        context.complain(str(e))
        return None


def _health(context: Context, config: Config) -> dict[str, Any] | None:
    try:
        return fetchHealth(currentAddress(context, config))
    except ProxyUnreachableError:
        return None


def _modeFromFile(config: Config) -> tuple[str, str, str | None]:
    """
    The mode the daemon would pick from the files alone: its name, where it
    comes from, and any problem with the mode file.
    """
    content = None
    if config.modeFile is not None:
        try:
            with open(config.modeFile, "rb") as modeFile:
                content = modeFile.read(4096)
        except FileNotFoundError:
            content = None
        except OSError as e:
            return config.defaultMode, "default", f"cannot be read: {e.strerror}"
    reading = readModeFile(content, config)
    if reading.mode is not None:
        return reading.mode, "mode file", None
    return config.defaultMode, "default", reading.problem


def resolveModeName(word: str, config: Config) -> str | None:
    """
    A configured mode's name from what was typed: the name itself, or one
    of rrouter's shortcuts (C{a}, C{c}, C{ag}) when that mode exists.
    """
    if config.mode(word) is not None:
        return word
    full = SHORTCUTS.get(word)
    if full is not None and config.mode(full) is not None:
        return full
    return None


def mode(context: Context, arguments: argparse.Namespace) -> int:
    config = _config(context)
    if config is None:
        return FAILURE
    names = ", ".join(each.name for each in config.modes)
    if arguments.name is None:
        health = _health(context, config)
        if health is not None:
            source = "mode file" if health["mode_source"] == "file" else "default"
            context.say(f"{health['mode']} (from the {source})")
            if health.get("mode_file_problem"):
                context.complain(
                    f"the mode file {health['mode_file']} {health['mode_file_problem']}"
                )
            return OK
        current, source, problem = _modeFromFile(config)
        context.say(f"{current} (from the {source}; ccrouter is not running)")
        if problem is not None:
            context.complain(f"the mode file {config.modeFile} {problem}")
        return OK
    name = resolveModeName(arguments.name, config)
    if name is None:
        close = difflib.get_close_matches(
            arguments.name, [m.name for m in config.modes]
        )
        hint = f"; did you mean {close[0]!r}?" if close else ""
        context.complain(
            f"{arguments.name!r} is neither a command nor a mode{hint}"
            f" (modes: {names}; commands: ccrouter --help)"
        )
        return USAGE
    if config.modeFile is None:
        context.complain(
            "the built-in config has no mode file; run 'ccrouter init' to create"
            " a config with modes"
        )
        return FAILURE
    previous = _health(context, config)
    replaceFile(config.modeFile, name.encode("utf-8") + b"\n", mode=0o600)
    if previous is None:
        context.say(f"mode: {name} (ccrouter is not running; it will start in it)")
        return OK
    deadline = time.monotonic() + _SWITCH_WAIT
    health = previous
    while time.monotonic() < deadline:
        health = _health(context, config) or health
        if health["mode"] == name:
            context.say(f"mode: {name} (was {previous['mode']})")
            return OK
        time.sleep(0.05)
    context.complain(
        f"wrote {name} to {config.modeFile}, but ccrouter is still in mode"
        f" {health['mode']}: {health.get('mode_file_problem') or 'is it watching?'}"
    )
    return FAILURE


def health(context: Context, arguments: argparse.Namespace) -> int:
    config = _config(context)
    if config is None:
        return FAILURE
    address = currentAddress(context, config)
    try:
        document = fetchHealth(address)
    except ProxyUnreachableError as e:
        context.say(f"down: {e}")
        return FAILURE
    context.say(
        f"{document['status']}: ccrouter {document['version']} at {address.url},"
        f" up {round(document['uptime_seconds'])} s"
    )
    for line in describeHealth(document):
        context.say(line)
    return OK if document["status"] == "ok" else FAILURE


def _savedBoard(config: Config) -> tuple[BreakerBoard, float] | None:
    """
    The breakers as last saved, when ccrouter is not running to ask.
    """
    if config.modeFile is None:
        return None
    board = BreakerBoard(config.breaker)
    now = time.monotonic()
    board.reconcile(config.targetNames, config.breaker, now)
    path = os.path.join(os.path.dirname(config.modeFile), BREAKER_STATE_NAME)
    try:
        loadBoard(path, board, now, time.time())
    except ValueError:
        return None
    return board, now


def _targetStates(config: Config, health: dict[str, Any] | None) -> dict[str, str]:
    """
    Each failover target's breaker, as a short phrase.
    """
    states: dict[str, str] = {}
    if health is not None:
        for name, target in (health.get("targets") or {}).items():
            state = target["state"]
            if state == "open":
                minutes = target["cooldown_remaining_seconds"] / 60
                state += f", {minutes:.1f} min left"
            elif state == "half-open" and target.get("probing"):
                state += ", being probed"
            states[name] = state
        return states
    saved = _savedBoard(config)
    if saved is None:
        return states
    board, now = saved
    for name in board.names():
        breaker = board.get(name)
        assert breaker is not None
        report = breaker.report(now)
        state = report.state.value
        if report.cooldownRemaining:
            state += f", {report.cooldownRemaining / 60:.1f} min left"
        states[name] = state + " (saved state)"
    return states


def explain(context: Context, arguments: argparse.Namespace) -> int:
    config = _config(context)
    if config is None:
        return FAILURE
    health = _health(context, config)
    if arguments.mode is not None:
        modeName = resolveModeName(arguments.mode, config)
        if modeName is None:
            context.complain(f"no mode named {arguments.mode!r}")
            return USAGE
        where = "as asked"
    elif health is not None:
        modeName, where = health["mode"], "the running proxy's mode"
    else:
        modeName, source, _ = _modeFromFile(config)
        where = f"from the {source}; ccrouter is not running"
    body = json.dumps({"model": arguments.model, "stream": True}).encode("utf-8")
    plan = planRequest(config, b"POST", b"/v1/messages", body, modeName)
    states = _targetStates(config, health)
    current = config.mode(modeName)
    assert current is not None
    kind = (
        "failover between " + ", ".join(t.name for t in current.failover)
        if current.failover
        else "routes"
    )
    context.say(f"mode: {modeName} ({where}); {kind}")
    context.say(f"model: {arguments.model}")
    for number, attempt in enumerate(plan.attempts, 1):
        upstream = attempt.upstream
        if attempt.route is None:
            rule = "no route matches"
        else:
            rule = f"route {attempt.route.label} ({attempt.route.pattern.text})"
        renamed = (
            f"as {attempt.upstreamModel}"
            if attempt.upstreamModel != arguments.model
            else "model unchanged"
        )
        counted = (
            f"; breaker {states.get(attempt.target, 'closed')}"
            if attempt.target in config.targetNames
            else ""
        )
        context.say(
            f"  {number}. {attempt.target or '(no target)'}: {rule} ->"
            f" upstream {upstream.name} ({upstream.host}:{upstream.port}),"
            f" {renamed}{counted}"
        )
    if plan.failover:
        context.say("next request: " + _nextStep(plan.attempts, states))
    context.say("(nothing was sent)")
    return OK


def _nextStep(attempts: Any, states: dict[str, str]) -> str:
    available = [
        attempt.target
        for attempt in attempts
        if not states.get(attempt.target, "closed").startswith("open")
        and "being probed" not in states.get(attempt.target, "")
    ]
    if not available:
        return (
            "every target is out of rotation; the one whose cooldown ends first"
            " is tried"
        )
    first = available[0]
    if states.get(first, "closed").startswith("half-open"):
        return f"probes {first} (its cooldown is over), then the rest in order"
    rest = ", ".join(str(name) for name in available[1:])
    return f"goes to {first}" + (f", then {rest} if it fails" if rest else "")
