# -*- test-case-name: tests.test_configcmd -*-
"""
C{ccrouter config} and C{ccrouter init}: show the effective config with
its secrets masked, print its path, edit it safely, restore the default,
check a file for every problem, and create the config directory with the
local token.

A running daemon reloads the config file as soon as it has settled, so the
file is only ever replaced whole (a temporary file in the same directory,
then C{os.replace}) and only with a config that is valid.  Files that may
hold keys are created 0600 and their directory 0700.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from importlib.resources import files

from ccrouter.cli import FAILURE, OK, USAGE, Context
from ccrouter.config import (
    PORT_VARIABLE,
    UPSTREAM_VARIABLE,
    Auth,
    Config,
    ConfigError,
    ReadFile,
    Route,
    Timeouts,
    Upstream,
    checkConfig,
    parseConfig,
    permissionWarning,
)
from ccrouter.control import PLACEHOLDER_PREFIX, withPlaceholders
from ccrouter.files import replaceFile
from ccrouter.tokenfile import createTokenFile, readTokenFile

#: How many times C{config edit} re-opens the editor on an invalid config
#: before it gives up.
MAX_EDIT_ROUNDS = 20
TEMPLATE_NAME = "config-template.yaml"
#: The token file C{init} creates, beside the config.
TOKEN_NAME = "token"  # noqa: S105 - a file name
_TOKEN_EXAMPLE = f"# token_file: {TOKEN_NAME}  "
_TOKEN_SETTING = f"token_file: {TOKEN_NAME}    "


def template(withToken: bool = False) -> str:
    """
    The commented default config that C{init} and C{config reset} write.

    @param withToken: Whether it requires the local token in L{TOKEN_NAME}
        (the C{token_file} example uncommented).
    """
    text = files("ccrouter").joinpath(TEMPLATE_NAME).read_text("utf-8")
    if withToken:
        text = text.replace(_TOKEN_EXAMPLE, _TOKEN_SETTING, 1)
    return text


def _defaultFor(directory: str) -> str:
    """
    The default config for C{directory}: with the token when its token file
    is there, so that restoring the default does not quietly let every
    local client in again.
    """
    return template(withToken=os.path.lexists(os.path.join(directory, TOKEN_NAME)))


def config(context: Context, arguments: argparse.Namespace) -> int:
    """
    C{ccrouter config [show | path | edit | reset | check FILE]}.
    """
    action = arguments.action or "show"
    if action == "check":
        if not arguments.file:
            context.complain("usage: ccrouter config check FILE")
            return USAGE
        return _check(context, arguments.file)
    if arguments.file:
        context.complain(f"'config {action}' takes no FILE")
        return USAGE
    if action == "path":
        return _path(context)
    if action == "edit":
        return _edit(context)
    if action == "reset":
        return _reset(context)
    return _show(context)


# show


def _show(context: Context) -> int:
    from ccrouter.control import loadConfig

    path = context.paths.configFile
    try:
        loaded = loadConfig(context, needsSecrets=False)
    except ConfigError as e:
        context.complain(str(e))
        return FAILURE
    if os.path.exists(path):
        context.say(f"# {path}: the effective config (secrets masked)")
        try:
            with open(path, encoding="utf-8") as f:
                warning = permissionWarning(path, f.read())
        except (OSError, UnicodeDecodeError):
            warning = None
        if warning is not None:
            context.complain(f"warning: {warning}")
    else:
        context.say(
            f"# {path} does not exist: the built-in default (run 'ccrouter init')"
        )
    overrides = [
        name for name in (PORT_VARIABLE, UPSTREAM_VARIABLE) if name in context.environ
    ]
    if overrides:
        context.say(f"# overridden by the environment: {', '.join(overrides)}")
    for line in describeConfig(loaded):
        context.say(line)
    return OK


def describeConfig(config: Config) -> list[str]:
    """
    The effective config as YAML-like lines, every credential replaced by
    its length.
    """
    server = config.server
    lines = [
        "server:",
        f"  host: {server.host}",
        f"  port: {server.port}",
        f"  listen: [{', '.join(server.listen)}]",
        f"  max_body_bytes: {_size(server.maxBodyBytes)}",
        f"  allowed_hosts: [{', '.join(sorted(server.allowedHosts))}]",
        f"  allowed_origins: [{', '.join(sorted(server.allowedOrigins))}]",
        _tokenLine(server.token, server.tokenFile),
        "default:",
        *_upstreamLines(config.default, "  "),
    ]
    if config.upstreams:
        lines.append("upstreams:")
        for upstream in config.upstreams:
            lines.append(f"  {upstream.name}:")
            lines.extend(_upstreamLines(upstream, "    "))
    else:
        lines.append("upstreams: {}")
    explicitModes = not (
        len(config.modes) == 1
        and config.modes[0].routes == config.routes
        and not config.modes[0].failover
        and config.modes[0].name == "default"
    )
    if not explicitModes:
        lines.extend(_routeLines(config, config.routes, "", "routes"))
        lines.append("modes: {}  # one mode, 'default', with the routes above")
    else:
        lines.append("modes:")
        for mode in config.modes:
            if mode.failover:
                targets = ", ".join(
                    f"{target.name} ({target.kind})" for target in mode.failover
                )
                lines.append(f"  {mode.name}:")
                lines.append(f"    failover: [{targets}]")
            else:
                lines.extend(_routeLines(config, mode.routes, "  ", mode.name))
    breaker = config.breaker
    lines.extend(
        [
            f"default_mode: {config.defaultMode}",
            f"mode_file: {config.modeFile or 'none'}",
            "breaker:",
            f"  failures: {breaker.failures}",
            f"  timeouts: {breaker.timeouts}",
            f"  cooldowns: [{', '.join(_duration(s) for s in breaker.cooldowns)}]",
        ]
    )
    return lines


def _routeLines(
    config: Config, routes: tuple[Route, ...], indent: str, name: str
) -> list[str]:
    if not routes:
        return [f"{indent}{name}: []  # everything to default, unchanged"]
    lines = [f"{indent}{name}:"]
    for route in routes:
        lines.append(f"{indent}  - match: {json.dumps(route.pattern.text)}")
        if route.model is not None:
            lines.append(f"{indent}    model: {json.dumps(route.model)}")
        upstream = route.upstream
        if upstream == config.default:
            lines.append(f"{indent}    upstream: default")
        elif upstream in config.upstreams:
            lines.append(f"{indent}    upstream: {upstream.name}")
        else:
            lines.append(f"{indent}    upstream:")
            lines.extend(_upstreamLines(upstream, indent + "      "))
    return lines


def _upstreamLines(upstream: Upstream, indent: str) -> list[str]:
    url = f"{upstream.scheme}://{upstream.host}:{upstream.port}{upstream.basePath}"
    if upstream.auth is not None:
        auth = f"{{header: {upstream.auth.header}, value: {maskSecret(upstream.auth)}}}"
    elif upstream.forwardsClientCredentials:
        auth = "none  # the client's own credentials are passed on"
    else:
        auth = "none"
    return [
        f"{indent}url: {url}",
        f"{indent}auth: {auth}",
        f"{indent}timeouts: {_timeouts(upstream.timeouts)}",
    ]


def maskSecret(auth: Auth) -> str:
    """
    What is shown of a credential: its length, never any of its characters.
    """
    if PLACEHOLDER_PREFIX in auth.value:
        return "<from the environment; not set in this shell>"
    return f"<secret, {len(auth.value)} characters>"


def _tokenLine(token: str | None, tokenFile: str | None) -> str:
    if token is None:
        return "  token: none  # any local client may use the proxy"
    if PLACEHOLDER_PREFIX in token:
        shown = "<from the environment; not set in this shell>"
    else:
        shown = f"<secret, {len(token)} characters>"
    if tokenFile is not None:
        return f"  token_file: {tokenFile}  # {shown}"
    return f"  token: {shown}"


def _timeouts(timeouts: Timeouts) -> str:
    return (
        f"{{connect: {_duration(timeouts.connect)},"
        f" headers: {_duration(timeouts.headers)},"
        f" stream_headers: {_duration(timeouts.streamHeaders)},"
        f" idle: {_duration(timeouts.idle)}}}"
    )


def _duration(seconds: float) -> str:
    for unit, length in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= length and seconds % length == 0:
            return f"{int(seconds // length)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def _size(size: int) -> str:
    for unit, length in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size % length == 0:
            return f"{size // length}{unit}"
    return str(size)


# path


def _path(context: Context) -> int:
    path = context.paths.configFile
    context.say(path)
    if not os.path.lexists(path):
        context.err.write("(not created yet; run ccrouter init)\n")
        context.err.flush()
    return OK


# check


def _check(context: Context, path: str) -> int:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        context.say(f"{path}: cannot read: {e.strerror}")
        return FAILURE
    except UnicodeDecodeError:
        context.say(f"{path}: is not UTF-8 text")
        return FAILURE
    directory = os.path.dirname(os.path.abspath(path))
    problems = checkConfig(text, path, context.environ, directory, readTokenFile)
    for problem in problems:
        context.say(str(problem))
    if problems:
        return FAILURE
    context.say(f"{path}: ok")
    return OK


# edit


def _edit(context: Context) -> int:
    path = context.paths.configFile
    if not os.path.lexists(path):
        try:
            _makeDirectory(os.path.dirname(path))
            _createExclusive(path, _defaultFor(os.path.dirname(path)))
        except OSError as e:
            context.complain(f"cannot create {path}: {e.strerror}")
            return FAILURE
        context.say(f"Created {path} from the default template.")
    # Edit what a symlink points at, and replace that, so the link stays.
    target = os.path.realpath(path)
    try:
        with open(target, "rb") as f:
            original = f.read()
    except OSError as e:
        context.complain(f"cannot read {path}: {e.strerror}")
        return FAILURE
    editor = (
        context.environ.get("VISUAL") or context.environ.get("EDITOR") or ""
    ).strip() or "vi"
    try:
        command = shlex.split(editor)
    except ValueError as e:
        context.complain(f"cannot understand the editor command {editor!r}: {e}")
        return FAILURE
    directory = os.path.dirname(target)
    try:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.edit-", suffix=".yaml", dir=directory
        )
    except OSError as e:
        context.complain(f"cannot create a file in {directory}: {e.strerror}")
        return FAILURE
    keep = False
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(original)
        for _ in range(MAX_EDIT_ROUNDS):
            try:
                finished = subprocess.run([*command, temporary], check=False)
            except OSError as e:
                context.complain(
                    f"cannot run the editor {command[0]!r}: {e.strerror}"
                    " (set VISUAL or EDITOR)"
                )
                return FAILURE
            if finished.returncode != 0:
                context.complain(
                    f"the editor exited with status {finished.returncode};"
                    f" {path} is unchanged"
                )
                return FAILURE
            with open(temporary, "rb") as f:
                edited = f.read()
            problems = _problems(edited, path, context, os.path.dirname(path))
            if not problems:
                if edited == original:
                    context.say(f"No changes; {path} is unchanged.")
                    return OK
                with open(target, "rb") as f:
                    current = f.read()
                if current != original:
                    keep = True
                    context.complain(
                        f"{path} was changed by something else while you edited"
                        f" it; it is left as it is, and your version is in"
                        f" {temporary}"
                    )
                    return FAILURE
                with open(temporary, "rb") as f:
                    os.fsync(f.fileno())
                os.chmod(temporary, 0o600)
                os.replace(temporary, target)
                context.say(
                    f"Saved {path} ({_changedLines(original, edited)}). A running"
                    " ccrouter applies it within a second."
                )
                return OK
            for problem in problems:
                context.err.write(f"{problem}\n")
            context.err.flush()
            context.out.write("Edit again? [Y/n] ")
            context.out.flush()
            answer = sys.stdin.readline()
            if not answer or answer.strip().lower() not in ("", "y", "yes"):
                context.complain(f"not saved; {path} is unchanged")
                return FAILURE
        context.complain(
            f"still invalid after {MAX_EDIT_ROUNDS} rounds; {path} is unchanged"
        )
        return FAILURE
    finally:
        if not keep:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass


def _problems(
    data: bytes, source: str, context: Context, directory: str
) -> list[ConfigError]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [ConfigError(source, None, "", "is not UTF-8 text")]
    return checkConfig(
        text, source, withPlaceholders(context, text), directory, readTokenFile
    )


def _changedLines(before: bytes, after: bytes) -> str:
    old = before.decode("utf-8", "replace").splitlines()
    new = after.decode("utf-8", "replace").splitlines()
    removed = added = 0
    for line in difflib.ndiff(old, new):
        if line.startswith("- "):
            removed += 1
        elif line.startswith("+ "):
            added += 1
    return f"{added} line{'s' * (added != 1)} added, {removed} removed"


# reset


def _reset(context: Context) -> int:
    path = context.paths.configFile
    target = os.path.realpath(path)
    text = _defaultFor(os.path.dirname(target))
    try:
        _makeDirectory(os.path.dirname(target))
        try:
            with open(target, "rb") as f:
                current: bytes | None = f.read()
        except FileNotFoundError:
            current = None
        if current == text.encode("utf-8"):
            context.say(f"{path} is already the default config.")
            return OK
        if current is not None:
            backup = _backup(target, current)
            context.say(f"Saved the current config as {backup}")
        _replace(target, text)
    except OSError as e:
        context.complain(f"cannot reset {path}: {e.strerror}")
        return FAILURE
    context.say(f"Restored the default config in {path}")
    if text != template():
        context.say(
            f"It requires the local token in {TOKEN_NAME} beside it, as that"
            " file is there."
        )
    return OK


def _backup(path: str, data: bytes) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{path}.bak-{stamp}"
    for attempt in range(1, 1000):
        backup = base if attempt == 1 else f"{base}-{attempt}"
        try:
            descriptor = os.open(
                backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
        return backup
    raise FileExistsError(f"{base}: too many backups")


# init


def init(context: Context, arguments: argparse.Namespace) -> int:
    """
    C{ccrouter init [--no-token | --token]}: the config directory (0700), a
    commented config (0600), the local token (a 0600 file the new config
    names, unless C{--no-token}) and a mode file naming the default mode,
    never overwriting anything that is there.  The token is never shown.
    """
    path = context.paths.configFile
    directory = os.path.dirname(path)
    wantToken: bool | None = getattr(arguments, "token", None)
    try:
        if _makeDirectory(directory):
            context.say(f"Created {directory}/")
        else:
            context.say(f"Kept {directory}/ (it exists)")
        if _createExclusive(path, template(withToken=wantToken is not False)):
            context.say(f"Created {path} (the default config, with examples)")
        else:
            context.say(f"Kept {path} (it exists)")
    except OSError as e:
        context.complain(f"cannot create {e.filename or directory}: {e.strerror}")
        return FAILURE
    missing: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        loaded = parseConfig(
            text, path, context.environ, directory, _noteMissing(missing)
        )
    except (OSError, UnicodeDecodeError, ConfigError) as e:
        problem = e if isinstance(e, ConfigError) else f"{path}: cannot read: {e}"
        context.complain(f"{problem}")
        context.complain("no mode file created; fix the config first")
        return FAILURE
    if not _initToken(context, loaded, missing, wantToken):
        return FAILURE
    modeFile = loaded.modeFile
    if modeFile is not None:
        try:
            _makeDirectory(os.path.dirname(modeFile))
            if _createExclusive(modeFile, loaded.defaultMode + "\n"):
                context.say(f"Created {modeFile} (mode {loaded.defaultMode})")
            else:
                context.say(f"Kept {modeFile} (it exists)")
        except OSError as e:
            context.complain(f"cannot create {modeFile}: {e.strerror}")
            return FAILURE
    context.say()
    context.say("Next:")
    context.say("  ccrouter setup claude   # point Claude Code at the proxy")
    context.say("  ccrouter start          # run the proxy in the background")
    return OK


#: What a token file that is not there yet reads as while C{init} looks for
#: the files the config names.
_STAND_IN = b"x" * 43


def _noteMissing(missing: list[str]) -> ReadFile:
    """
    L{readTokenFile}, but a file that does not exist is noted in C{missing}
    and read as a stand-in, for C{init} to create.
    """

    def read(path: str) -> bytes:
        try:
            return readTokenFile(path)
        except FileNotFoundError:
            missing.append(path)
            return _STAND_IN

    return read


def _initToken(
    context: Context, loaded: Config, missing: list[str], wantToken: bool | None
) -> bool:
    """
    Create the token file the config names if it is missing (one that is
    there has been checked while loading).  With C{--token}, for a config
    that names none, create the usual one and say how to require it.

    @return: Whether all went well.
    """
    tokenFile = loaded.server.tokenFile
    required = tokenFile is not None
    if tokenFile is None:
        if not wantToken:
            return True
        tokenFile = os.path.join(os.path.dirname(context.paths.configFile), TOKEN_NAME)
    try:
        created = (not required or tokenFile in missing) and createTokenFile(tokenFile)
    except OSError as e:
        context.complain(f"cannot create {tokenFile}: {e.strerror}")
        return False
    if created:
        context.say(
            f"Created {tokenFile} (the local token, 256 random bits: every"
            " request must carry it; 'ccrouter setup claude' gives it to"
            " Claude Code)"
        )
    else:
        context.say(f"Kept {tokenFile} (it exists)")
    if not required:
        context.say(
            f"{context.paths.configFile} does not require it yet: add"
            f" 'token_file: {tokenFile}' under 'server:'"
        )
    return True


# Files


def _makeDirectory(directory: str) -> bool:
    """
    Create C{directory} (and its parents) 0700 if it is not there.

    @return: Whether it was created.
    """
    if os.path.isdir(directory):
        return False
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    return True


def _createExclusive(path: str, text: str) -> bool:
    """
    Write a new file 0600, never replacing one that exists.

    @return: Whether it was created.
    """
    try:
        descriptor = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
    return True


def _replace(path: str, text: str) -> None:
    """
    Replace C{path} whole with a 0600 file, so that a reader sees either
    the old text or the new.
    """
    replaceFile(path, text.encode("utf-8"), mode=0o600)
