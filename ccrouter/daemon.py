# -*- test-case-name: tests.test_daemon -*-
"""
Running the proxy: in the foreground (C{ccrouter serve}, which is
C{twistd -n ccrouter}), or in the background with a pid file and a log in
the state directory (C{start}, C{stop}, C{restart}, C{status}, C{logs}).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ccrouter.cli import FAILURE, OK, USAGE, Context
from ccrouter.config import Config, ConfigError
from ccrouter.control import (
    Address,
    NotServedError,
    ProxyUnreachableError,
    configPathForDaemon,
    fetchHealth,
    fetchStatusData,
    loadConfig,
    proxyAddress,
)
from ccrouter.files import makePrivateDirectories, writePrivateFile
from ccrouter.logs import LOG_FILE_VARIABLE, formatLine, readableLines

#: How often the command looks again while it waits for the daemon.
_POLL = 0.1
#: The options that belong to the ccrouter plugin rather than to twistd.
_PLUGIN_OPTIONS = {"--config": True, "-c": True, "--listen": True, "--version": False}


def twistdCommand(python: str | None = None) -> list[str]:
    """
    How to run the twistd of the environment C{python} (this command's own
    by default) belongs to: the C{twistd} script beside it, or the
    interpreter running twistd's C{run}.
    """
    python = python or sys.executable
    beside = Path(python).with_name("twistd")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [python, "-c", "from twisted.scripts.twistd import run; run()"]


def _splitOptions(options: Sequence[str]) -> tuple[list[str], list[str]]:
    """
    Separate twistd's options from the plugin's (C{--config}, C{--listen}),
    keeping each option with its value.
    """
    twistd: list[str] = []
    plugin: list[str] = []
    pending = list(options)
    while pending:
        option = pending.pop(0)
        name = option.split("=", 1)[0]
        if name in _PLUGIN_OPTIONS:
            plugin.append(option)
            if _PLUGIN_OPTIONS[name] and "=" not in option and pending:
                plugin.append(pending.pop(0))
        else:
            twistd.append(option)
    return twistd, plugin


def serve(context: Context, arguments: argparse.Namespace) -> int:
    """
    C{twistd -n --pidfile= ccrouter}, with the default config file when
    there is one.
    """
    from twisted.scripts.twistd import run

    options = [option for option in arguments.options if option != "--"]
    twistdOptions, pluginOptions = _splitOptions(options)
    names = {option.split("=", 1)[0] for option in pluginOptions}
    if not names & {"--config", "-c"}:
        path = configPathForDaemon(context)
        if path is not None:
            pluginOptions = ["--config", path, *pluginOptions]
    sys.argv = [
        "ccrouter serve",
        "-n",
        "--pidfile=",
        *twistdOptions,
        "ccrouter",
        *pluginOptions,
    ]
    run()
    return OK


def _processExists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Someone else's process: the pid was reused.
        return False
    return True


def _commandLine(pid: int) -> list[str] | None:
    """
    The arguments C{pid} runs with, if the system says.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().decode("utf-8", "replace").split("\0")
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        shown = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return shown.stdout.split() if shown.returncode == 0 else None


def _isOurs(pid: int, pidFile: str) -> bool:
    """
    Whether C{pid} is the daemon C{start} left with C{pidFile}: a twistd
    running the ccrouter plugin with that pid file, not just any process
    whose command line mentions ccrouter (an editor on its log, say).
    """
    arguments = _commandLine(pid)
    if arguments is None:
        return _processExists(pid)
    return "ccrouter" in arguments and pidFile in arguments


def runningPid(context: Context) -> int | None:
    """
    The daemon's pid from the pid file, if that process is alive and is
    ccrouter.  A stale pid file is removed, and said so.
    """
    path = context.paths.pidFile
    try:
        with open(path) as pidFile:
            text = pidFile.read().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        context.complain(f"cannot read {path}: {e.strerror}")
        return None
    pid = int(text) if text.isascii() and text.isdigit() else None
    if pid is not None and _processExists(pid) and _isOurs(pid, path):
        return pid
    try:
        os.unlink(path)
    except OSError:
        pass
    context.complain(f"removed a stale pid file ({path}: {text or 'empty'})")
    return None


def currentAddress(context: Context, config: Config) -> Address:
    """
    Where the running proxy answers: as recorded by the C{start} that
    launched it (its environment may have differed from this one), or as
    C{config} says.
    """
    if runningPid(context) is not None:
        recorded = _recordedAddress(context)
        if recorded is not None:
            return recorded
    return proxyAddress(config)


def _recordedAddress(context: Context) -> Address | None:
    try:
        with open(context.paths.addressFile) as recorded:
            saved = json.load(recorded)
        return Address(saved["host"], saved["port"], saved.get("unixPath"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _address(context: Context, running: bool = True) -> Address | None:
    """
    Where the proxy answers: as recorded by the C{start} of the daemon that
    runs, or else as the config (and this environment) says.
    """
    if running:
        recorded = _recordedAddress(context)
        if recorded is not None:
            return recorded
    try:
        return proxyAddress(loadConfig(context, needsSecrets=False))
    except ConfigError as e:
        context.complain(str(e))
        return None


def _tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read().splitlines()[-lines:]
    except OSError:
        return []


def _whyItFailed(context: Context) -> None:
    paths = context.paths
    startup = [line for line in _tail(paths.startupLog, 20) if line.strip()]
    logged = [
        text
        for text in (formatLine(line) for line in _tail(paths.logFile, 200))
        if text is not None
    ]
    problems = [text for text in logged if "error" in text.lower()][-10:]
    for line in startup + problems or logged[-10:]:
        if line.startswith("ccrouter: "):
            context.err.write(line + "\n")
        else:
            context.complain(line)
    context.complain(f"the log is {paths.logFile}")


def start(context: Context, arguments: argparse.Namespace) -> int:
    paths = context.paths
    pid = runningPid(context)
    if pid is not None:
        context.say(f"ccrouter is already running (pid {pid})")
        return OK
    address = _address(context, running=False)
    if address is None:
        return FAILURE
    makePrivateDirectories(paths.stateDirectory)
    writePrivateFile(
        paths.addressFile,
        json.dumps(
            {"host": address.host, "port": address.port, "unixPath": address.unixPath}
        ).encode("utf-8"),
    )
    config = configPathForDaemon(context)
    command = [
        *twistdCommand(),
        "-n",
        "--pidfile",
        paths.pidFile,
        "--logger",
        "ccrouter.logs.daemonObserver",
        "ccrouter",
        *(["--config", config] if config is not None else []),
    ]
    environ = dict(context.environ)
    environ[LOG_FILE_VARIABLE] = paths.logFile
    environ.setdefault("PYTHONUNBUFFERED", "1")
    descriptor = os.open(paths.startupLog, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as startupLog:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=startupLog,
            stderr=subprocess.STDOUT,
            env=environ,
            cwd=paths.stateDirectory,
            start_new_session=True,
        )
    deadline = time.monotonic() + arguments.timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pid = runningPid(context)
            if pid is not None:
                # Another 'start' won the race.
                context.say(f"ccrouter is already running (pid {pid})")
                return OK
            context.complain(
                f"ccrouter did not start (exit status {process.returncode})"
            )
            _whyItFailed(context)
            return FAILURE
        try:
            health = fetchHealth(address, timeout=1.0)
        except ProxyUnreachableError:
            time.sleep(_POLL)
            continue
        if health.get("pid") != process.pid:
            process.terminate()
            process.wait(10)
            context.complain(
                f"another ccrouter (pid {health.get('pid')}) already answers at"
                f" {address.url}"
            )
            return FAILURE
        context.say(
            f"ccrouter started (pid {process.pid}), listening on {address.url},"
            f" mode {health['mode']}"
        )
        return OK
    process.terminate()
    process.wait(10)
    context.complain(
        f"ccrouter did not answer at {address.url} within {arguments.timeout:g} s"
    )
    _whyItFailed(context)
    return FAILURE


def _waitForExit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _processExists(pid):
            return True
        time.sleep(_POLL)
    return not _processExists(pid)


def stop(context: Context, arguments: argparse.Namespace) -> int:
    pid = runningPid(context)
    if pid is None:
        context.say("ccrouter is not running")
        return OK
    os.kill(pid, signal.SIGTERM)
    if not _waitForExit(pid, arguments.timeout):
        context.complain(
            f"ccrouter (pid {pid}) is still running after {arguments.timeout:g} s;"
            f" 'kill -9 {pid}' stops it at once"
        )
        return FAILURE
    try:
        os.unlink(context.paths.pidFile)
    except FileNotFoundError:
        pass
    context.say(f"ccrouter stopped (pid {pid})")
    return OK


def restart(context: Context, arguments: argparse.Namespace) -> int:
    status = stop(context, arguments)
    if status != OK:
        return status
    return start(context, argparse.Namespace(timeout=max(15.0, arguments.timeout / 4)))


def _minutes(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def describeTargets(health: dict[str, Any]) -> list[str]:
    """
    One line per target of C{/health}, for people.
    """
    lines = []
    targets = health.get("targets") or {}
    width = max((len(name) for name in targets), default=0)
    for name, target in targets.items():
        state = target["state"]
        parts: list[str] = []
        if state != "closed":
            parts.append(
                f"cooldown {_minutes(target['cooldown_remaining_seconds'])} left"
                f" ({target['cooldown_source']})"
            )
        if target.get("consecutive_failures"):
            parts.append(f"{target['consecutive_failures']} failures in a row")
        failure = target.get("last_failure")
        if failure is not None:
            parts.append(
                f"last failure {_minutes(failure['seconds_ago'])} ago:"
                f" {failure['reason']}"
            )
        parts.append(f"{target['requests']} requests, {target['failures']} failed")
        lines.append(f"{name:<{width}}  {state:<9}  " + "; ".join(parts))
    return lines


def describeHealth(health: dict[str, Any]) -> list[str]:
    """
    The readable summary C{status} and C{health} print.
    """
    lines = []
    config = health["config"]
    reload = config.get("last_reload")
    configLine = f"config: {config['path'] or 'built-in default'}"
    if reload is not None and not reload["ok"]:
        configLine += f" (the last reload failed: {reload['error']})"
    lines.append(configLine)
    source = "the mode file" if health["mode_source"] == "file" else "the default"
    lines.append(f"mode: {health['mode']} (from {source})")
    if health.get("mode_file_problem"):
        lines.append(f"mode file {health['mode_file']} {health['mode_file_problem']}")
    switch = health.get("auto_switch")
    if switch:
        if switch["switched"]:
            lines.append(
                f"failover: on {switch['current']} instead of {switch['preferred']}"
                f" ({switch['failovers']} failovers so far)"
            )
        else:
            lines.append(
                f"failover: on the preferred target {switch['preferred']}"
                f" ({switch['failovers']} failovers so far)"
            )
    targets = describeTargets(health)
    if targets:
        lines.append("targets:")
        lines.extend("  " + line for line in targets)
    return lines


def status(context: Context, arguments: argparse.Namespace) -> int:
    requests: int = getattr(arguments, "requests", 10)
    if requests < 0:
        context.complain("--requests cannot be negative")
        return USAGE
    pid = runningPid(context)
    address = _address(context, running=pid is not None)
    if address is None:
        return FAILURE
    try:
        health = fetchHealth(address)
    except ProxyUnreachableError as e:
        if pid is None:
            context.say("ccrouter is not running")
        else:
            context.say(f"ccrouter is running (pid {pid}) but does not answer: {e}")
        return FAILURE
    started = "" if pid == health.get("pid") else " (not started by 'ccrouter start')"
    listen = ", ".join(health.get("listen") or [address.url])
    context.say(
        f"ccrouter {health['version']} is running (pid {health.get('pid')}){started},"
        f" {health['status']}"
    )
    context.say(f"listening: {address.url} ({listen})")
    for line in describeHealth(health):
        context.say(line)
    if requests:
        _sayRecent(context, address, requests)
    return OK


def _sayRecent(context: Context, address: Address, count: int) -> None:
    """
    The proxy's C{count} most recent requests, if it keeps them.
    """
    # Here, not at the top: statscmd imports this module.
    from ccrouter.statscmd import formatRecent

    try:
        data = fetchStatusData(address)
    except NotServedError:
        # A ccrouter from before /status/data: what it has was said.
        return
    except ProxyUnreachableError as e:
        context.complain(f"cannot list the recent requests: {e}")
        return
    for line in formatRecent(data, count):
        context.say(line)


def logs(context: Context, arguments: argparse.Namespace) -> int:
    if arguments.lines < 0:
        context.complain("--lines cannot be negative")
        return USAGE
    path = context.paths.logFile
    try:
        stream = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        context.complain(f"no log yet at {path}")
        return FAILURE
    with stream:
        lines = list(readableLines(stream))
        for line in lines[len(lines) - arguments.lines :] if arguments.lines else []:
            context.say(line)
        if not arguments.follow:
            return OK
        return _follow(context, path, stream)


def _follow(context: Context, path: str, stream: Any) -> int:
    """
    Print lines as they are added, across rotations, until interrupted.
    """
    inode = os.fstat(stream.fileno()).st_ino
    pending = ""
    while True:
        chunk = stream.read()
        if chunk:
            pending += chunk
            *complete, pending = pending.split("\n")
            for line in complete:
                text = formatLine(line)
                if text is not None:
                    context.say(text)
            continue
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (
            current.st_ino != inode or current.st_size < stream.tell()
        ):
            stream.close()
            stream = open(path, encoding="utf-8", errors="replace")
            inode = os.fstat(stream.fileno()).st_ino
            continue
        time.sleep(0.25)
