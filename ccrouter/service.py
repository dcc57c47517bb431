# -*- test-case-name: tests.test_service -*-
"""
C{ccrouter service install | uninstall}: run the proxy as a systemd user
service (with an optional socket unit for socket activation), or as a
launchd agent on macOS.

The unit files and the plist are made by pure functions so that they can be
checked without a service manager.  They hold no secrets: only the
variables in L{KEPT_VARIABLES} are copied into them, and the variables a
config refers to (API keys) are read by systemd from an optional
C{EnvironmentFile} the user keeps with mode 0600.
"""

from __future__ import annotations

import argparse
import math
import os
import plistlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from attrs import frozen

from ccrouter.cli import FAILURE, OK, USAGE, Context
from ccrouter.config import ClientLimits, ConfigError
from ccrouter.control import Address, configPathForDaemon, loadConfig, proxyAddress
from ccrouter.daemon import twistdCommand
from ccrouter.files import replaceFile

SERVICE_UNIT = "ccrouter.service"
SOCKET_UNIT = "ccrouter.socket"
#: The socket unit's C{FileDescriptorName=}, which the service adopts by name.
SOCKET_NAME = "ccrouter"
SOCKET_ENDPOINT = f"systemd:domain=INET:name={SOCKET_NAME}"
LAUNCHD_LABEL = "io.github.ccrouter"
#: Beside the config: C{NAME=value} lines systemd gives the service, for the
#: C{${VAR}} references in the config.
ENVIRONMENT_FILE_NAME = "service.env"
#: The variables, when set, that decide what the proxy loads and where it
#: keeps its files; copied into the unit so the service behaves like
#: C{ccrouter start} from the same shell.  Nothing else is copied.
KEPT_VARIABLES = (
    "CCROUTER_HOME",
    "CCROUTER_PORT",
    "CCROUTER_UPSTREAM",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
)
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Beyond the proxy's drain deadline, how long systemd waits after SIGTERM
#: before it kills: the rest of the stop sequence and the exit.
STOP_MARGIN = 15

#: Runs a command and gives its exit status and what it printed.
Runner = Callable[[Sequence[str], Mapping[str, str]], "Outcome"]


@frozen
class Outcome:
    status: int
    output: str


def runCommand(command: Sequence[str], environ: Mapping[str, str]) -> Outcome:
    """
    Run C{command}, waiting at most a minute.
    """
    try:
        completed = subprocess.run(
            list(command),
            env=dict(environ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return Outcome(127, str(e))
    return Outcome(completed.returncode, (completed.stderr or completed.stdout).strip())


# The pure generators.


def serverCommand(python: str, configPath: str | None, socket: bool) -> list[str]:
    """
    The command line of the service: twistd in the foreground, no pidfile.
    """
    command = [*twistdCommand(python), "-n", "--pidfile=", "ccrouter"]
    if configPath is not None:
        command += ["--config", configPath]
    if socket:
        command += ["--listen", SOCKET_ENDPOINT]
    return command


def serviceEnvironment(environ: Mapping[str, str]) -> dict[str, str]:
    """
    The environment written into the unit or plist: unbuffered output and
    those of L{KEPT_VARIABLES} that are set (a C{CCROUTER_UPSTREAM} with a
    password in it is left out).
    """
    kept = {"PYTHONUNBUFFERED": "1"}
    for name in KEPT_VARIABLES:
        value = environ.get(name)
        if not value:
            continue
        if name == "CCROUTER_UPSTREAM" and _hasPassword(value):
            continue
        if name == "CCROUTER_HOME":
            value = os.path.abspath(os.path.expanduser(value))
        kept[name] = value
    return kept


def _hasPassword(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return True


def _checkLine(value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"cannot put {value!r} in a unit file")
    return value


def systemdQuote(word: str) -> str:
    """
    One word of an C{ExecStart=} line: specifiers and variables escaped,
    quoted when it has blanks, quotes, backslashes or is C{;}.
    """
    escaped = _checkLine(word).replace("%", "%%").replace("$", "$$")
    if escaped and not any(c in escaped for c in " \t\"'\\;"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _environmentLine(name: str, value: str) -> str:
    assignment = _checkLine(f"{name}={value}").replace("%", "%%")
    if not any(c in assignment for c in " \t\"'\\"):
        return f"Environment={assignment}"
    return 'Environment="' + assignment.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stopTimeout(drain: float) -> int:
    """
    systemd's C{TimeoutStopSec} for a proxy that drains for C{drain}
    seconds: longer, so that SIGKILL never cuts a drain short.
    """
    return math.ceil(drain) + STOP_MARGIN


def systemdService(
    python: str,
    configPath: str | None,
    environment: Mapping[str, str],
    socket: bool,
    environmentFile: str | None = None,
    drain: float = ClientLimits().drain,
) -> str:
    """
    The text of C{ccrouter.service}.

    @param python: The interpreter whose twistd runs the proxy.
    @param configPath: The absolute C{--config}, or L{None} for the built-in
        default.
    @param environment: Variables to set (no secrets).
    @param socket: Whether the service adopts C{ccrouter.socket}.
    @param environmentFile: An optional C{NAME=value} file for the service.
    @param drain: The config's C{server.drain_timeout}, which the stop
        timeout must exceed.
    """
    unit = ["[Unit]", "Description=ccrouter, a model-routing proxy for Claude Code"]
    if socket:
        unit += [f"Requires={SOCKET_UNIT}", f"After={SOCKET_UNIT}"]
    service = [
        "",
        "[Service]",
        "Type=exec",
        "ExecStart="
        + " ".join(systemdQuote(w) for w in serverCommand(python, configPath, socket)),
    ]
    service += [_environmentLine(k, v) for k, v in environment.items()]
    if environmentFile is not None:
        service.append(
            "EnvironmentFile=-" + _checkLine(environmentFile).replace("%", "%%")
        )
    service += [
        "Restart=on-failure",
        "RestartSec=2",
        # SIGTERM starts the proxy's drain; systemd waits for it (and more)
        # before SIGKILL.  Mixed: only the proxy gets SIGTERM, everything
        # left in the unit gets SIGKILL at the end.
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        f"TimeoutStopSec={stopTimeout(drain)}",
        # Config, token, mode, state and log files readable by the user only.
        "UMask=0077",
        # One per client connection and upstream stream, well past 1024.
        "LimitNOFILE=65536",
        "NoNewPrivileges=yes",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    if socket:
        service.append(f"Also={SOCKET_UNIT}")
    return "\n".join(unit + service) + "\n"


def systemdSocket(address: Address) -> str:
    """
    The text of C{ccrouter.socket}, listening where clients reach the proxy.
    """
    host = f"[{address.host}]" if ":" in address.host else address.host
    return (
        "[Unit]\n"
        "Description=ccrouter's listening socket\n"
        "\n"
        "[Socket]\n"
        f"ListenStream={_checkLine(host)}:{address.port}\n"
        f"FileDescriptorName={SOCKET_NAME}\n"
        "\n"
        "[Install]\n"
        "WantedBy=sockets.target\n"
    )


def launchdAgent(
    python: str,
    configPath: str | None,
    environment: Mapping[str, str],
    stateDirectory: str,
) -> bytes:
    """
    The launchd agent plist (XML), restarted when it exits with a failure.
    """
    agent = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": serverCommand(python, configPath, socket=False),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
        "StandardOutPath": os.path.join(stateDirectory, "service.log"),
        "StandardErrorPath": os.path.join(stateDirectory, "service.log"),
        "EnvironmentVariables": dict(environment),
    }
    return plistlib.dumps(agent, fmt=plistlib.FMT_XML)


# Where things go.


def _home(environ: Mapping[str, str]) -> str:
    return environ.get("HOME") or os.path.expanduser("~")


def systemdUserDirectory(environ: Mapping[str, str]) -> str:
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(_home(environ), ".config")
    return os.path.join(base, "systemd", "user")


def launchAgentPath(environ: Mapping[str, str]) -> str:
    return os.path.join(
        _home(environ), "Library", "LaunchAgents", f"{LAUNCHD_LABEL}.plist"
    )


def environmentFilePath(context: Context) -> str:
    return os.path.join(context.paths.configDirectory, ENVIRONMENT_FILE_NAME)


def referencedVariables(configPath: str | None) -> list[str]:
    """
    The C{${VAR}} names the config file refers to, in order, once each.
    """
    if configPath is None:
        return []
    try:
        text = Path(configPath).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    names: list[str] = []
    for line in text.splitlines():
        code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        for name in _REFERENCE.findall(code):
            if name not in names:
                names.append(name)
    return names


# Files.


def writeFile(path: str, content: bytes) -> None:
    """
    Replace C{path} with C{content} atomically, mode 0644 (no secrets).
    """
    replaceFile(path, content, mode=0o644)


def _remove(context: Context, path: str, quiet: bool = False) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not quiet:
            context.say(f"not there: {path}")
        return True
    except OSError as e:
        context.complain(f"cannot remove {path}: {e.strerror}")
        return False
    context.say(f"removed {path}")
    return True


def _write(context: Context, path: str, content: bytes) -> bool:
    try:
        writeFile(path, content)
    except OSError as e:
        context.complain(f"cannot write {path}: {e.strerror}")
        return False
    context.say(f"wrote {path}")
    return True


# Service managers.


class _Manager:
    """
    Runs C{systemctl --user} or C{launchctl} and reports each command.
    """

    def __init__(self, context: Context, run: Runner, enabled: bool) -> None:
        self.context = context
        self.run = run
        self.enabled = enabled
        self.failed = False

    def command(self, command: Sequence[str], quiet: bool = False) -> bool:
        """
        Run C{command} and say how it went; a failure counts against the
        exit status unless C{quiet}.
        """
        outcome = self.run(command, self.context.environ)
        line = " ".join(command)
        if outcome.status == 0:
            self.context.say(f"ran {line}: ok")
            return True
        detail = f": {outcome.output}" if outcome.output else ""
        if quiet:
            self.context.say(f"ran {line}: exit status {outcome.status}{detail}")
        else:
            self.context.say(
                f"ran {line}: FAILED (exit status {outcome.status}){detail}"
            )
            self.failed = True
        return False


def _systemdUsable(context: Context, run: Runner) -> str | None:
    """
    L{None} if C{systemctl --user} works, otherwise why not.
    """
    if shutil.which("systemctl", path=context.environ.get("PATH")) is None:
        return "systemctl is not installed"
    outcome = run(["systemctl", "--user", "show-environment"], context.environ)
    if outcome.status != 0:
        reason = outcome.output.splitlines()[-1] if outcome.output else ""
        return "systemctl --user does not work" + (f" ({reason})" if reason else "")
    return None


def _systemctl(*words: str) -> list[str]:
    return ["systemctl", "--user", *words]


def _installSystemd(
    context: Context, arguments: argparse.Namespace, run: Runner, python: str
) -> int:
    socket: bool = arguments.socket
    configPath = configPathForDaemon(context)
    try:
        config = loadConfig(context, needsSecrets=False)
        address = proxyAddress(config)
    except ConfigError as e:
        context.complain(f"{e}; fix the config first ('ccrouter config check')")
        return FAILURE
    environment = serviceEnvironment(context.environ)
    environmentFile = environmentFilePath(context)
    try:
        serviceText = systemdService(
            python,
            configPath,
            environment,
            socket,
            environmentFile,
            drain=config.server.limits.drain,
        )
        socketText = systemdSocket(address) if socket else None
    except ValueError as e:
        context.complain(str(e))
        return FAILURE

    directory = systemdUserDirectory(context.environ)
    servicePath = os.path.join(directory, SERVICE_UNIT)
    socketPath = os.path.join(directory, SOCKET_UNIT)
    unit = SOCKET_UNIT if socket else SERVICE_UNIT

    reason = None if arguments.no_enable else _systemdUsable(context, run)
    manager = _Manager(context, run, enabled=not arguments.no_enable and not reason)
    if manager.enabled:
        # A reinstall: stop what runs now, so that the new units start with
        # the new command line and a socket can bind the service's port.
        previous = [
            name
            for name, path in ((SOCKET_UNIT, socketPath), (SERVICE_UNIT, servicePath))
            if os.path.exists(path)
        ]
        if previous:
            manager.command(_systemctl("disable", "--now", *previous), quiet=True)

    if not _write(context, servicePath, serviceText.encode("utf-8")):
        return FAILURE
    if socketText is not None:
        if not _write(context, socketPath, socketText.encode("utf-8")):
            return FAILURE
    elif os.path.exists(socketPath) and not _remove(context, socketPath):
        return FAILURE

    commands = [_systemctl("daemon-reload"), _systemctl("enable", "--now", unit)]
    if manager.enabled:
        for command in commands:
            if not manager.command(command):
                break
    else:
        why = "--no-enable" if arguments.no_enable else reason
        context.say(f"did not run systemctl ({why}); to start the service, run:")
        for command in commands:
            context.say("  " + " ".join(command))
    _adviseSecrets(context, configPath, environmentFile, systemd=True)
    if socket:
        context.say(f"systemd listens on {address.url} and starts ccrouter on demand")
    else:
        context.say(f"the service listens on {address.url}")
    context.say("logs: journalctl --user -u ccrouter -f")
    return FAILURE if manager.failed else OK


def _uninstallSystemd(
    context: Context, arguments: argparse.Namespace, run: Runner
) -> int:
    directory = systemdUserDirectory(context.environ)
    servicePath = os.path.join(directory, SERVICE_UNIT)
    socketPath = os.path.join(directory, SOCKET_UNIT)
    present = [
        name
        for name, path in ((SOCKET_UNIT, socketPath), (SERVICE_UNIT, servicePath))
        if os.path.exists(path)
    ]
    reason = None if arguments.no_enable else _systemdUsable(context, run)
    manager = _Manager(context, run, enabled=not arguments.no_enable and not reason)
    disable = _systemctl("disable", "--now", *present)
    if manager.enabled and present:
        manager.command(disable)
    removed = _remove(context, socketPath, quiet=True) & _remove(context, servicePath)
    if manager.enabled:
        manager.command(_systemctl("daemon-reload"))
    elif present:
        why = "--no-enable" if arguments.no_enable else reason
        context.say(f"did not run systemctl ({why}); if the service runs, run:")
        context.say("  " + " ".join(disable))
        context.say("  " + " ".join(_systemctl("daemon-reload")))
    return OK if removed and not manager.failed else FAILURE


def _adviseSecrets(
    context: Context, configPath: str | None, environmentFile: str, systemd: bool
) -> None:
    names = referencedVariables(configPath)
    if not names:
        return
    listed = ", ".join(names)
    context.say(
        f"the service does not see your shell's variables; the config uses {listed}."
    )
    if systemd:
        context.say(
            f"put them as NAME=value lines in {environmentFile}"
            f" (chmod 600), then: systemctl --user restart {SERVICE_UNIT}"
        )
    else:
        context.say(
            "set each with 'launchctl setenv NAME value' before the agent starts"
            " (or keep literal keys in a config only you can read)"
        )


def _installLaunchd(
    context: Context, arguments: argparse.Namespace, run: Runner, python: str
) -> int:
    configPath = configPathForDaemon(context)
    try:
        address = proxyAddress(loadConfig(context, needsSecrets=False))
    except ConfigError as e:
        context.complain(f"{e}; fix the config first ('ccrouter config check')")
        return FAILURE
    stateDirectory = context.paths.stateDirectory
    try:
        os.makedirs(stateDirectory, mode=0o700, exist_ok=True)
    except OSError as e:
        context.complain(f"cannot create {stateDirectory}: {e.strerror}")
        return FAILURE
    path = launchAgentPath(context.environ)
    content = launchdAgent(
        python, configPath, serviceEnvironment(context.environ), stateDirectory
    )
    domain = f"gui/{os.getuid()}"
    manager = _Manager(context, run, enabled=not arguments.no_enable)
    if manager.enabled and os.path.exists(path):
        manager.command(["launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"], True)
    if not _write(context, path, content):
        return FAILURE
    bootstrap = ["launchctl", "bootstrap", domain, path]
    if manager.enabled:
        manager.command(bootstrap)
    else:
        context.say("did not run launchctl (--no-enable); to start the agent, run:")
        context.say("  " + " ".join(bootstrap))
    _adviseSecrets(context, configPath, "", systemd=False)
    context.say(f"the agent listens on {address.url}")
    context.say(f"logs: {os.path.join(stateDirectory, 'service.log')}")
    return FAILURE if manager.failed else OK


def _uninstallLaunchd(
    context: Context, arguments: argparse.Namespace, run: Runner
) -> int:
    path = launchAgentPath(context.environ)
    bootout = ["launchctl", "bootout", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"]
    if not arguments.no_enable and os.path.exists(path):
        # Not loaded is not a failure: the point is that it is not.
        _Manager(context, run, enabled=True).command(bootout, quiet=True)
    elif os.path.exists(path):
        context.say("did not run launchctl (--no-enable); if the agent runs, run:")
        context.say("  " + " ".join(bootout))
    return OK if _remove(context, path) else FAILURE


def service(
    context: Context,
    arguments: argparse.Namespace,
    platform: str | None = None,
    run: Runner = runCommand,
    python: str | None = None,
) -> int:
    """
    C{ccrouter service install [--socket] [--no-enable]} and
    C{ccrouter service uninstall [--no-enable]}.
    """
    platform = sys.platform if platform is None else platform
    python = sys.executable if python is None else python
    if platform == "darwin":
        if arguments.socket and arguments.action == "install":
            context.complain("--socket is for systemd; launchd agents start at login")
            return USAGE
        if arguments.action == "install":
            return _installLaunchd(context, arguments, run, python)
        return _uninstallLaunchd(context, arguments, run)
    if not platform.startswith("linux"):
        context.complain(f"services are supported on Linux and macOS, not {platform}")
        return FAILURE
    if arguments.action == "install":
        return _installSystemd(context, arguments, run, python)
    return _uninstallSystemd(context, arguments, run)
