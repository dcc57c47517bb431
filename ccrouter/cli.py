# -*- test-case-name: tests.test_cli -*-
"""
The C{ccrouter} command: run the proxy in the foreground or as a daemon,
switch modes, inspect health and routing, manage the config, install a
service and point Claude Code at the proxy.

Each command is a function C{(context, arguments) -> exit status} in the
module that does its job; this module only parses the command line.  Exit
statuses: 0 ok, 1 failure, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from attrs import frozen

from ccrouter import __version__
from ccrouter.paths import Paths, resolvePaths

OK, FAILURE, USAGE = 0, 1, 2

#: rrouter's one- and two-letter mode shortcuts.
SHORTCUTS = {"a": "auto", "c": "claude", "ag": "antigravity"}


@frozen
class Context:
    """
    What every command works with; tests give their own.
    """

    environ: Mapping[str, str]
    paths: Paths
    out: TextIO
    err: TextIO

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def complain(self, text: str) -> None:
        self.err.write(f"ccrouter: {text}\n")
        self.err.flush()


Command = Callable[[Context, argparse.Namespace], int]


def _lazy(module: str, name: str) -> Command:
    """
    A command whose module is imported only when it runs, so that
    C{ccrouter mode} does not pay for importing Twisted's web client.
    """

    def run(context: Context, arguments: argparse.Namespace) -> int:
        from importlib import import_module

        command: Command = getattr(import_module(module), name)
        return command(context, arguments)

    return run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccrouter",
        description=(
            "Route Claude Code's requests by model name between Anthropic and"
            " other providers.  'ccrouter NAME' switches to mode NAME (a: auto,"
            " c: claude, ag: antigravity)."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"ccrouter {__version__}"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="the same as 'ccrouter health'",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, run: Command, help: str, aliases: Sequence[str] = ()
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, aliases=aliases)
        sub.set_defaults(run=run)
        return sub

    serve = command(
        "serve",
        _lazy("ccrouter.daemon", "serve"),
        "run the proxy in the foreground (twistd -n ccrouter); twistd options"
        " such as --logfile may come first, then --config and --listen",
    )
    serve.add_argument("options", nargs=argparse.REMAINDER)
    start = command(
        "start",
        _lazy("ccrouter.daemon", "start"),
        "start the proxy in the background and wait until it answers",
    )
    start.add_argument("--timeout", type=float, default=15.0, help="seconds to wait")
    stop = command(
        "stop", _lazy("ccrouter.daemon", "stop"), "stop the background proxy"
    )
    stop.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    restart = command(
        "restart", _lazy("ccrouter.daemon", "restart"), "stop, then start"
    )
    restart.add_argument("--timeout", type=float, default=60.0)
    status = command(
        "status",
        _lazy("ccrouter.daemon", "status"),
        "pid, address, mode, targets and recent requests of the running proxy;"
        " exit 1 when it is not running",
    )
    status.add_argument(
        "--requests",
        type=int,
        default=10,
        metavar="N",
        help="how many recent requests to list (default 10; 0: none)",
    )
    stats = command(
        "stats",
        _lazy("ccrouter.statscmd", "stats"),
        "requests and tokens per target and model since the proxy started;"
        " exit 1 when it is not running",
    )
    stats.add_argument(
        "--json", action="store_true", help="print the totals as JSON instead"
    )
    logs = command("logs", _lazy("ccrouter.daemon", "logs"), "print the log")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing")
    logs.add_argument(
        "-n", "--lines", type=int, default=50, help="how many lines (default 50)"
    )

    mode = command(
        "mode",
        _lazy("ccrouter.commands", "mode"),
        "print the current mode, or switch to NAME",
    )
    mode.add_argument("name", nargs="?")
    command(
        "health",
        _lazy("ccrouter.commands", "health"),
        "query /health and summarise it; exit 1 when down or degraded",
        aliases=["check"],
    )
    explain = command(
        "explain",
        _lazy("ccrouter.commands", "explain"),
        "show where a request for MODEL would go now, without sending one",
    )
    explain.add_argument("model")
    explain.add_argument("--mode", help="explain for this mode instead")

    config = command(
        "config",
        _lazy("ccrouter.configcmd", "config"),
        "show the effective config (secrets masked), or: path, edit, reset, check FILE",
    )
    config.add_argument(
        "action",
        nargs="?",
        default="show",
        choices=["show", "path", "edit", "reset", "check"],
    )
    config.add_argument("file", nargs="?", help="for 'check': the file to check")
    init = command(
        "init",
        _lazy("ccrouter.configcmd", "init"),
        "create the config directory, a commented config, the local token and a"
        " mode file",
    )
    init.add_argument(
        "--token",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--no-token: a new config does not require the local token;"
        " --token: create the token file for an existing config too",
    )

    setup = command(
        "setup",
        _lazy("ccrouter.claudesetup", "setup"),
        "point Claude Code at this proxy (~/.claude/settings.json)",
    )
    setup.add_argument("tool", choices=["claude"])
    setup.add_argument(
        "--undo", action="store_true", help="restore what was there before"
    )
    service = command(
        "service",
        _lazy("ccrouter.service", "service"),
        "install or uninstall a systemd user service (a launchd agent on macOS)",
    )
    service.add_argument("action", choices=["install", "uninstall"])
    service.add_argument(
        "--socket", action="store_true", help="with a socket unit (systemd only)"
    )
    service.add_argument(
        "--no-enable",
        action="store_true",
        help="write the files only; do not run systemctl or launchctl",
    )
    return parser


#: Every word that is a command rather than a mode name.
def _commandNames(parser: argparse.ArgumentParser) -> set[str]:
    names: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            names.update(action.choices)
    return names


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """
    Run one C{ccrouter} command and return its exit status.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ if environ is None else environ)
    context = Context(
        environ=environ,
        paths=resolvePaths(environ),
        out=out or sys.stdout,
        err=err or sys.stderr,
    )
    parser = _parser()
    if arguments and not arguments[0].startswith("-"):
        if arguments[0] not in _commandNames(parser):
            # 'ccrouter auto', 'ccrouter c', 'ccrouter glm': a mode switch.
            arguments = ["mode", *arguments]
    if arguments[:1] == ["serve"] and not {"-h", "--help"} & set(arguments):
        # Everything after 'serve' belongs to twistd and the plugin, which
        # argparse cannot pass through when it starts with an option.
        parsed = argparse.Namespace(
            command="serve",
            check=False,
            run=_lazy("ccrouter.daemon", "serve"),
            options=arguments[1:],
        )
        return int(parsed.run(context, parsed))
    try:
        parsed = parser.parse_args(arguments)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else USAGE
    if parsed.check and parsed.command is None:
        parsed.command = "health"
        parsed.run = _lazy("ccrouter.commands", "health")
    if parsed.command is None:
        parser.print_help(context.out)
        return USAGE
    try:
        status: int = parsed.run(context, parsed)
    except KeyboardInterrupt:
        return FAILURE
    return status


def entryPoint() -> None:
    """
    The C{ccrouter} console script.
    """
    sys.exit(main())
