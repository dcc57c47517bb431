# -*- test-case-name: tests.test_cli -*-
"""
What the C{ccrouter} command needs to know about the proxy it controls:
its config (read the way the daemon reads it), the address it answers on,
and its C{/health} document.  Plain blocking I/O: the command is not a
Twisted program.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from typing import Any

from attrs import frozen

from ccrouter.cli import Context
from ccrouter.config import Config, ConfigError

#: A C{${NAME}} reference (not the C{$${NAME}} escape).
_REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: C{tcp:PORT:interface=HOST} and C{tcp6:...}, the endpoints a client can
#: reach by address.
_TCP_ENDPOINT = re.compile(r"tcp6?:(?:port=)?(\d+)(?::(.*))?\Z")


def loadConfig(context: Context, needsSecrets: bool = True) -> Config:
    """
    The config the daemon would load: the file if there is one, otherwise
    the built-in default, with the same environment overrides.

    @param needsSecrets: Whether C{${NAME}} references must be set in this
        environment; commands that only need modes and addresses say no.
    @raise ConfigError: If it is not valid.
    """
    from ccrouter import tap

    path = context.paths.configFile
    try:
        with open(path, encoding="utf-8", errors="replace") as configFile:
            text = configFile.read()
    except FileNotFoundError:
        return tap.loadConfig(None, context.environ)
    except OSError as e:
        raise ConfigError(path, None, "", f"cannot read: {e.strerror}") from None
    environ = context.environ if needsSecrets else withPlaceholders(context, text)
    return tap.loadConfig(path, environ)


#: What a C{${NAME}} the command's environment lacks stands for.
PLACEHOLDER_PREFIX = "unset-"


def withPlaceholders(context: Context, text: str) -> dict[str, str]:
    """
    The environment, with a stand-in for each variable C{text} refers to
    and the environment lacks.  Switching modes, showing or editing the
    config needs its shape, not the provider keys, which may live only in
    the daemon's environment (a systemd C{EnvironmentFile}, say).
    """
    environ = dict(context.environ)
    for name in _REFERENCE.findall(text):
        if not environ.get(name):
            environ[name] = PLACEHOLDER_PREFIX + name
    return environ


def configPathForDaemon(context: Context) -> str | None:
    """
    The C{--config} to start the daemon with: the config file if it exists,
    or L{None} for the built-in default.
    """
    path = context.paths.configFile
    try:
        open(path, "rb").close()
    except OSError:
        return None
    return path


@frozen
class Address:
    """
    Where the proxy answers: a TCP host and port, or a UNIX socket.
    """

    host: str
    port: int
    unixPath: str | None = None

    @property
    def url(self) -> str:
        if self.unixPath is not None:
            return f"unix:{self.unixPath}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.unixPath is not None:
            return _UnixConnection(self.unixPath, timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def proxyAddress(config: Config, environ: dict[str, str] | None = None) -> Address:
    """
    Where clients reach the proxy: the first TCP endpoint it listens on,
    or C{server.host}/C{server.port} (also for socket activation, whose
    socket unit listens there).
    """
    for description in config.server.listen:
        match = _TCP_ENDPOINT.match(description)
        if match is None:
            continue
        host = config.server.host
        for option in re.split(r"(?<!\\):", match.group(2) or ""):
            name, _, value = option.partition("=")
            if name == "interface" and value:
                host = value.replace("\\", "")
        if host in ("0.0.0.0", ""):  # noqa: S104 - a listening wildcard, reached locally
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return Address(host, int(match.group(1)))
    for description in config.server.listen:
        if description.startswith("unix:"):
            path = re.split(r"(?<!\\):", description[len("unix:") :])[0]
            return Address("localhost", 0, path.replace("\\", ""))
    return Address(config.server.host, config.server.port)


class ProxyUnreachableError(Exception):
    """
    Nothing answered at the proxy's address, or not like ccrouter.
    """


class NotServedError(ProxyUnreachableError):
    """
    The proxy answered, but not that path: a ccrouter older than this
    command.
    """


def _get(address: Address, path: str, timeout: float) -> tuple[int, bytes]:
    """
    The status and body of C{GET path} at the proxy.

    @raise ProxyUnreachableError: If nothing answers.
    """
    connection = address.connection(timeout)
    try:
        connection.request("GET", path, headers={"Host": address.host})
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as e:
        raise ProxyUnreachableError(f"nothing answers at {address.url} ({e})") from None
    finally:
        connection.close()
    return response.status, body


def fetchHealth(address: Address, timeout: float = 3.0) -> dict[str, Any]:
    """
    The proxy's C{/health} document.

    @raise ProxyUnreachableError: If it cannot be had.
    """
    status, body = _get(address, "/health", timeout)
    if status != 200:
        raise ProxyUnreachableError(
            f"{address.url}/health answered {status}; is that ccrouter?"
        )
    try:
        document = json.loads(body)
    except ValueError:
        raise ProxyUnreachableError(f"{address.url}/health is not ccrouter's") from None
    if not isinstance(document, dict) or "mode" not in document:
        raise ProxyUnreachableError(f"{address.url}/health is not ccrouter's")
    return document


def fetchStatusData(address: Address, timeout: float = 3.0) -> dict[str, Any]:
    """
    The proxy's C{/status/data} document: its recent requests, tokens per
    minute and totals per target and model.

    @raise NotServedError: If the proxy has no such page (it is older).
    @raise ProxyUnreachableError: If it cannot be had otherwise.
    """
    url = f"{address.url}/status/data"
    status, body = _get(address, "/status/data", timeout)
    if status == 404:
        raise NotServedError(
            f"{url} is not there: the running ccrouter is older than this command"
            " (restart it)"
        )
    if status != 200:
        raise ProxyUnreachableError(f"{url} answered {status}; is that ccrouter?")
    try:
        document = json.loads(body)
    except ValueError:
        raise ProxyUnreachableError(f"{url} is not ccrouter's") from None
    if not isinstance(document, dict):
        raise ProxyUnreachableError(f"{url} is not ccrouter's")
    return document
