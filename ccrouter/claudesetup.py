# -*- test-case-name: tests.test_claudesetup -*-
"""
C{ccrouter setup claude [--undo]}: point Claude Code at this proxy by setting
C{env.ANTHROPIC_BASE_URL} in its C{settings.json} (and, when the config
requires the local token, an C{x-ccrouter-token} line in
C{env.ANTHROPIC_CUSTOM_HEADERS}), and put back what was there before.

The file is merged, never rebuilt: every other key keeps its value and its
place.  It is written to a temporary file beside it and renamed over it, so
it is never left truncated; a file that is not a JSON object is refused and
left as it is.  What was there before is recorded in the state directory
(L{ccrouter.paths.Paths.claudeSetupRecord}) for C{--undo}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
from collections.abc import Mapping
from typing import Any

from ccrouter.cli import FAILURE, OK, Context
from ccrouter.config import TOKEN_HEADER, ConfigError
from ccrouter.control import PLACEHOLDER_PREFIX, loadConfig, proxyAddress
from ccrouter.files import replaceFile

KEY = "ANTHROPIC_BASE_URL"
#: Extra headers Claude Code sends with every request: one C{Name: value}
#: per line.
HEADERS_KEY = "ANTHROPIC_CUSTOM_HEADERS"
BACKUP_SUFFIX = ".ccrouter-backup"
_RESTART = (
    "Restart running Claude Code sessions: they read settings.json only when"
    " they start."
)


class SettingsError(Exception):
    """
    The settings file cannot be used; the message says why and where.
    """


def settingsPath(environ: Mapping[str, str]) -> str:
    """
    Claude Code's user settings: C{$CLAUDE_CONFIG_DIR/settings.json}, or
    C{~/.claude/settings.json}.
    """
    directory = environ.get("CLAUDE_CONFIG_DIR")
    if directory:
        directory = os.path.expanduser(directory)
    else:
        home = environ.get("HOME") or os.path.expanduser("~")
        directory = os.path.join(home, ".claude")
    return os.path.abspath(os.path.join(directory, "settings.json"))


def readSettings(path: str) -> dict[str, Any] | None:
    """
    The settings object in C{path}, or L{None} if there is no file.  An
    empty file counts as an empty object.

    @raise SettingsError: If it cannot be read, is not JSON, is not an
        object or has an C{env} that is not an object.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SettingsError(f"{path}: cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SettingsError(
            f"{path}: not UTF-8 text (byte {e.start + 1}); not changed"
        ) from None
    if not text.strip():
        return {}
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as e:
        raise SettingsError(
            f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}; not changed"
        ) from None
    if not isinstance(settings, dict):
        raise SettingsError(
            f"{path}: the top level is a JSON {_kind(settings)}, not an object;"
            " not changed"
        )
    env = settings.get("env")
    if env is not None and not isinstance(env, dict):
        raise SettingsError(
            f'{path}: "env" is a JSON {_kind(env)}, not an object; not changed'
        )
    return settings


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "object"


def _realPath(path: str) -> str:
    """
    Where to write C{path}: through a symbolic link (a dotfiles checkout),
    not over it.
    """
    return os.path.realpath(path) if os.path.islink(path) else path


def writeAtomically(path: str, content: bytes, newMode: int = 0o600) -> None:
    """
    Replace C{path} with C{content} without ever truncating it, keeping its
    mode (C{newMode} for a new file).
    """
    replaceFile(_realPath(path), content, mode=newMode, keepExistingMode=True)


def _serialise(settings: Mapping[str, Any]) -> bytes:
    return (json.dumps(settings, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _backUp(context: Context, path: str) -> None:
    backup = path + BACKUP_SUFFIX
    with open(_realPath(path), "rb") as f:
        original = f.read()
    writeAtomically(backup, original, 0o600)
    os.chmod(_realPath(backup), 0o600)
    context.say(f"backed up {path} to {backup}")


def _readRecord(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise SettingsError(f"{path}: cannot read the setup record") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), str):
        raise SettingsError(f"{path}: not a setup record ccrouter wrote")
    return record


def _shown(value: object) -> str:
    return "(not set)" if value is None else json.dumps(value, ensure_ascii=False)


def setup(context: Context, arguments: argparse.Namespace) -> int:
    """
    C{ccrouter setup claude [--undo]}.
    """
    try:
        if arguments.undo:
            return _undo(context)
        return _setup(context)
    except SettingsError as e:
        context.complain(str(e))
        return FAILURE
    except OSError as e:
        context.complain(f"{e.filename or 'settings'}: {e.strerror}")
        return FAILURE


def _setup(context: Context) -> int:
    try:
        config = loadConfig(context, needsSecrets=False)
    except ConfigError as e:
        context.complain(f"{e}; fix the config first ('ccrouter config check')")
        return FAILURE
    address = proxyAddress(config)
    if address.unixPath is not None:
        context.complain(
            "ccrouter listens only on a UNIX socket, and Claude Code needs an"
            " http:// address: add a tcp endpoint to server.listen"
        )
        return FAILURE
    token = config.server.token
    if token is not None and PLACEHOLDER_PREFIX in token:
        context.complain(
            "server.token comes from an environment variable this shell does"
            " not have, so Claude Code cannot be given it: set it here too, or"
            " keep the token in a file (server.token_file)"
        )
        return FAILURE
    url = address.url
    path = settingsPath(context.environ)
    recordPath = context.paths.claudeSetupRecord
    settings = readSettings(path)
    existed = settings is not None
    if settings is None:
        settings = {}
    env = settings.get("env")
    hadKey = isinstance(env, dict) and KEY in env
    previous = env.get(KEY) if isinstance(env, dict) else None
    headers = _headers(path, env)

    record = _readRecord(recordPath)
    if record is not None and (
        record.get("settings") != path or not hadKey or previous != record.get("url")
    ):
        # Stale: the value ccrouter set is no longer there, so what is there
        # now is what to go back to.
        record = None
    touched = None if record is None else record.get("headers")
    if token is not None:
        newHeaders: str | None = withToken(headers, token)
    elif isinstance(touched, dict):
        # The config no longer has a token: take back the header ccrouter added.
        newHeaders = restoredHeaders(headers, touched)
    else:
        newHeaders = headers
    if hadKey and previous == url and newHeaders == headers:
        context.say(f"{path}: env.{KEY} is already {url}; nothing changed")
        return OK

    if record is None:
        record = {
            "settings": path,
            "had_key": hadKey,
            "previous": previous,
            "created_env": env is None,
            "created_file": not existed,
        }
    record["url"] = url
    if token is None:
        record.pop("headers", None)
    elif "headers" not in record:
        # Not the token itself: undo takes out the line by its name.
        record["headers"] = {
            "had_key": isinstance(env, dict) and HEADERS_KEY in env,
            "previous": headers,
        }

    if existed:
        _backUp(context, path)
    if env is None:
        env = settings["env"] = {}
    env[KEY] = url
    if newHeaders is None:
        env.pop(HEADERS_KEY, None)
    else:
        env[HEADERS_KEY] = newHeaders
    os.makedirs(context.paths.stateDirectory, mode=0o700, exist_ok=True)
    writeAtomically(recordPath, _serialise(record), 0o600)
    loosened = _writeSettings(path, settings, private=token is not None)
    verb = "changed" if existed else "created"
    if hadKey and previous == url:
        context.say(f"{path}: env.{KEY} is already {url}")
    else:
        context.say(
            f"{verb} {path}: env.{KEY}:"
            f" {_shown(previous if hadKey else None)} -> {_shown(url)}"
        )
    if newHeaders != headers:
        source = (
            ""
            if config.server.tokenFile is None
            else f", from {config.server.tokenFile}"
        )
        change = (
            f"the {TOKEN_HEADER} header (the local token{source})"
            if token is not None
            else f"no {TOKEN_HEADER} header (the config has no token now)"
        )
        context.say(f"{verb} {path}: env.{HEADERS_KEY} now sends {change}")
    if loosened is not None:
        context.say(
            f"made {path} private (mode {loosened & 0o700:04o}, was"
            f" {loosened:04o}): it holds the local token"
        )
    context.say(
        f"('ccrouter setup claude --undo' restores {_shown(record['previous'])})"
    )
    _adviseNoProxy(context)
    context.say(_RESTART)
    return OK


def _headers(path: str, env: object) -> str | None:
    """
    The C{ANTHROPIC_CUSTOM_HEADERS} in Claude Code's settings, or L{None}.

    @raise SettingsError: If it is there but not a string.
    """
    if not isinstance(env, dict) or env.get(HEADERS_KEY) is None:
        return None
    value = env[HEADERS_KEY]
    if not isinstance(value, str):
        raise SettingsError(
            f'{path}: "env.{HEADERS_KEY}" is a JSON {_kind(value)}, not a string;'
            " not changed"
        )
    return value


def _writeSettings(path: str, settings: Mapping[str, Any], private: bool) -> int | None:
    """
    Write the settings, keeping the file's mode; when it holds the token
    and others may read it, make it private.

    @return: The old mode when it was made private, else L{None}.
    """
    content = _serialise(settings)
    target = _realPath(path)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o600
    if private and mode & 0o077:
        replaceFile(target, content, mode=mode & 0o700)
        return mode
    writeAtomically(path, content, 0o600)
    return None


_LINE_BREAK = re.compile(r"\r?\n")


def _isTokenLine(line: str) -> bool:
    return line.partition(":")[0].strip().lower() == TOKEN_HEADER


def withoutToken(headers: str | None) -> str:
    """
    C{ANTHROPIC_CUSTOM_HEADERS} without any C{x-ccrouter-token} line (nor
    blank lines).
    """
    return "\n".join(
        line
        for line in _LINE_BREAK.split(headers or "")
        if line.strip() and not _isTokenLine(line)
    )


def withToken(headers: str | None, token: str) -> str:
    """
    C{ANTHROPIC_CUSTOM_HEADERS} with the other headers as they were and one
    C{x-ccrouter-token} line, the last, carrying C{token}.
    """
    rest = withoutToken(headers)
    line = f"{TOKEN_HEADER}: {token}"
    return f"{rest}\n{line}" if rest else line


def restoredHeaders(headers: str | None, touched: Mapping[str, Any]) -> str | None:
    """
    C{ANTHROPIC_CUSTOM_HEADERS} as it was before ccrouter added its line:
    exactly the old value when the other headers are unchanged since, or
    else the headers there now without ccrouter's; L{None} to remove it.

    @param touched: The setup record's C{headers}: whether there was a
        value, and what.
    """
    rest = withoutToken(headers)
    previous = touched.get("previous")
    if isinstance(previous, str) and withoutToken(previous) == rest:
        return previous
    if not rest and not touched.get("had_key"):
        return None
    return rest


def _adviseNoProxy(context: Context) -> None:
    proxied = any(
        context.environ.get(name)
        for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
    )
    exempt = context.environ.get("NO_PROXY", "") + context.environ.get("no_proxy", "")
    if proxied and "127.0.0.1" not in exempt and "localhost" not in exempt:
        context.say(
            "An HTTP(S) proxy is set: add 127.0.0.1,localhost to NO_PROXY so that"
            " Claude Code reaches ccrouter directly."
        )


def _undo(context: Context) -> int:
    recordPath = context.paths.claudeSetupRecord
    record = _readRecord(recordPath)
    if record is None:
        context.complain(
            "nothing to undo: 'ccrouter setup claude' has not been run"
            f" (no {recordPath})"
        )
        return FAILURE
    path: str = record["settings"]
    settings = readSettings(path)
    if settings is None:
        context.say(f"{path} is gone; nothing to restore")
        os.unlink(recordPath)
        return OK
    env = settings.get("env")
    current = env.get(KEY) if isinstance(env, dict) else None
    if current != record.get("url"):
        context.complain(
            f"{path}: env.{KEY} is now {_shown(current)}, not the"
            f" {_shown(record.get('url'))} ccrouter set; left as it is"
            f" (delete {recordPath} to forget the setup)"
        )
        return FAILURE
    assert isinstance(env, dict)
    touched = record.get("headers")
    headers = _headers(path, env) if isinstance(touched, dict) else None
    _backUp(context, path)
    if record.get("had_key"):
        env[KEY] = record.get("previous")
        restored = _shown(record.get("previous"))
    else:
        del env[KEY]
        restored = "(not set)"
    if isinstance(touched, dict):
        newHeaders = restoredHeaders(headers, touched)
        if newHeaders is None:
            env.pop(HEADERS_KEY, None)
        else:
            env[HEADERS_KEY] = newHeaders
    if record.get("created_env") and not env:
        del settings["env"]
    if record.get("created_file") and not settings:
        os.unlink(_realPath(path))
        context.say(f"removed {path}, which 'ccrouter setup claude' created")
    else:
        writeAtomically(path, _serialise(settings), 0o600)
        context.say(f"changed {path}: env.{KEY}: {_shown(current)} -> {restored}")
        if isinstance(touched, dict):
            context.say(
                f"changed {path}: env.{HEADERS_KEY} no longer sends the"
                f" {TOKEN_HEADER} header"
            )
    os.unlink(recordPath)
    context.say(_RESTART)
    return OK
