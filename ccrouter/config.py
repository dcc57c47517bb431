# -*- test-case-name: tests.test_config -*-
"""
The configuration file: YAML text in, one frozen L{Config} snapshot out.

Everything here is pure (but L{permissionWarning}, which looks at a file's
permissions): the caller reads the file and passes the text, the source
name used in messages, and the environment used for C{${NAME}} expansion.
Every problem is reported as a L{ConfigError} naming the file, the line
and the dotted key path, because a user who mistypes C{uptream:} must be
told so rather than have the key silently ignored.  L{parseConfig} raises
the first problem; L{checkConfig} lists them all.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

import yaml
from attrs import define, evolve, field, frozen

from ccrouter.breaker import BreakerPolicy
from ccrouter.routing import ModelPattern
from ccrouter.translate.profiles import (
    COMPAT_PROFILES,
    PROFILES,
    AnthropicCompat,
    Profile,
)

DEFAULT_UPSTREAM_URL = "https://api.anthropic.com"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
#: Environment variables that override the config, as rrouter's
#: C{RROUTER_PORT} and C{RROUTER_UPSTREAM} do.
PORT_VARIABLE = "CCROUTER_PORT"
#: The header that carries C{server.token}; Claude Code sends it from
#: C{ANTHROPIC_CUSTOM_HEADERS}.
TOKEN_HEADER = "x-ccrouter-token"  # noqa: S105 - a header name
#: A token file larger than this is not one token.
MAX_TOKEN_FILE_BYTES = 4096
#: A config file larger than this was not written by hand: it is refused
#: before being parsed, which would take seconds and hundreds of MiB.
MAX_CONFIG_BYTES = 1024 * 1024
#: Reads a file the config names (C{server.token_file}): at most
#: C{MAX_TOKEN_FILE_BYTES + 1} bytes of it.  It raises L{OSError}, or
#: L{ValueError} saying why the file must not be used (its permissions).
ReadFile = Callable[[str], bytes]
UPSTREAM_VARIABLE = "CCROUTER_UPSTREAM"
#: The one mode of a config without C{modes:}.
IMPLICIT_MODE = "default"
DEFAULT_MODE_FILE = "mode"
#: Mode names are written in the mode file and typed on the command line.
_MODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_T = TypeVar("_T")


class ConfigError(Exception):
    """
    A configuration problem, located as precisely as the YAML allows.

    C{str()} gives the one-line form users see:
    C{config.yaml:14: routes[1].upstream.auth.value: <what is wrong>}.
    """

    def __init__(self, source: str, line: int | None, key: str, problem: str):
        self.source = source
        self.line = line
        self.key = key
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.problem}"
        return f"{where}: {self.problem}"


@frozen
class Auth:
    """
    The credential ccrouter adds for an upstream, replacing the client's own.

    @ivar header: The header name, e.g. C{x-api-key} or C{authorization}.
    @ivar value: The secret; kept out of C{repr} so it cannot reach a log line.
    """

    header: str
    value: str = field(repr=False)


@frozen
class ClientLimits:
    """
    What one client connection may take, in seconds and counts.  Twisted's
    own timeouts only measure silence, so a client that drips a byte a
    second would hold a connection for ever without these.

    @ivar headers: From the first byte of a request to the end of its headers.
    @ivar bodyIdle: The longest silence allowed inside a request body.
    @ivar bodyTotal: The longest a request body may take to arrive.
    @ivar keepAlive: How long an idle keep-alive connection is kept open.
    @ivar writeStall: How long a client may stop reading a response before
        both it and the upstream are cut.
    @ivar maxConnections: Open client connections; when full, the oldest
        idle one is closed to make room.
    @ivar maxStreams: Requests in flight to upstreams; over it, a fast 529.
    @ivar drain: On SIGTERM, how long in-flight requests may take to finish.
    """

    headers: float = 10.0
    bodyIdle: float = 30.0
    bodyTotal: float = 120.0
    keepAlive: float = 75.0
    writeStall: float = 300.0
    maxConnections: int = 256
    maxStreams: int = 64
    drain: float = 30.0


@frozen
class Timeouts:
    """
    Per-phase limits, in seconds, for one upstream exchange.

    @ivar connect: Name resolution, TCP and TLS set-up.
    @ivar headers: From sending a non-streaming request to its response headers.
    @ivar streamHeaders: The same for a request with C{"stream": true}.
    @ivar idle: The longest silence allowed between two body chunks.
    """

    connect: float = 5.0
    headers: float = 600.0
    streamHeaders: float = 60.0
    idle: float = 300.0

    def forHeaders(self, streaming: bool) -> float:
        return self.streamHeaders if streaming else self.headers


@frozen
class Upstream:
    """
    A provider endpoint requests can be sent to.

    @ivar name: How logs and errors refer to it (never a secret).
    @ivar scheme: C{http} or C{https}.
    @ivar host: Host name or IPv4 address.
    @ivar port: TCP port.
    @ivar basePath: Path prefix kept in front of every request path, without a
        trailing slash (C{/api/anthropic}), or empty.
    @ivar auth: The credential to add, or L{None}.
    @ivar forwardsClientCredentials: Whether the client's own C{authorization}
        and C{x-api-key} may reach this upstream.  Only the default upstream
        (Anthropic) without configured C{auth} does.
    """

    name: str
    scheme: str
    host: str
    port: int
    basePath: str
    auth: Auth | None
    forwardsClientCredentials: bool
    timeouts: Timeouts
    #: C{anthropic} (Messages API) or C{openai} (Chat Completions, translated).
    format: str = "anthropic"
    #: For C{openai}: the upstream's quirks.
    profile: Profile | None = None
    #: For an Anthropic-compatible third party: what it rejects.
    compat: AnthropicCompat | None = None

    @property
    def origin(self) -> str:
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"

    def urlFor(self, requestTarget: bytes) -> bytes:
        """
        The upstream URL for a request's raw origin-form target (path and
        query, still percent-encoded), which must start with C{/}.
        """
        return (self.origin + self.basePath).encode("ascii") + requestTarget


@frozen
class Route:
    """
    One routing rule: requests whose model matches go to C{upstream}, with
    the model renamed to C{model} when that is set.

    @ivar label: Where the rule came from (C{routes[2]}), for logs.
    """

    pattern: ModelPattern
    upstream: Upstream
    model: str | None
    label: str


@frozen
class Target:
    """
    Something a failover mode can send a request to: a mode with routes, or
    an upstream that takes every request with its model name unchanged
    (written as a single catch-all route).

    @ivar kind: C{mode} or C{upstream}.
    """

    name: str
    kind: str
    routes: tuple[Route, ...]


@frozen
class Mode:
    """
    A named way of routing, chosen by the mode file: its own routes, or
    (when C{failover} is not empty) an ordered list of targets to fail over
    between.
    """

    name: str
    routes: tuple[Route, ...]
    failover: tuple[Target, ...] = ()


@frozen
class ServerSettings:
    """
    @ivar listen: Twisted server endpoint strings to listen on.
    @ivar host: The address clients use (C{server.host}).
    @ivar port: The port clients use (C{server.port}, or C{CCROUTER_PORT}).
    @ivar maxBodyBytes: Request bodies above this are refused with 413.
    @ivar allowedHosts: C{Host} names accepted besides loopback ones.
    @ivar allowedOrigins: Browser C{Origin}s accepted (none by default).
    """

    listen: tuple[str, ...]
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    maxBodyBytes: int = DEFAULT_MAX_BODY_BYTES
    allowedHosts: frozenset[str] = frozenset()
    allowedOrigins: frozenset[str] = frozenset()
    #: When set, every request but C{/health} must carry it in
    #: L{TOKEN_HEADER}; kept out of C{repr}.
    token: str | None = field(default=None, repr=False)
    limits: ClientLimits = ClientLimits()
    #: The file C{token} was read from (C{server.token_file}), if any.
    tokenFile: str | None = None
    #: Whether listening on an address other hosts can reach is allowed
    #: (C{server.allow_remote}); only together with a token.
    allowRemote: bool = False


@frozen
class Config:
    """
    One immutable snapshot of the configuration.  A reload builds a new one
    and swaps it whole; requests keep the snapshot they started with.
    """

    source: str
    server: ServerSettings
    default: Upstream
    routes: tuple[Route, ...]
    upstreams: tuple[Upstream, ...]
    #: At least one; a config without C{modes:} has the one mode
    #: L{IMPLICIT_MODE}, with the top-level routes.
    modes: tuple[Mode, ...]
    defaultMode: str
    #: The file that names the current mode, or L{None} when there is none
    #: (the built-in config).
    modeFile: str | None
    breaker: BreakerPolicy

    def mode(self, name: str) -> Mode | None:
        for mode in self.modes:
            if mode.name == name:
                return mode
        return None

    @property
    def targetNames(self) -> tuple[str, ...]:
        """
        Every failover target of every mode, once each: the names that have
        a breaker.
        """
        names: dict[str, None] = {}
        for mode in self.modes:
            for target in mode.failover:
                names[target.name] = None
        return tuple(names)


def parseConfig(
    text: str,
    source: str,
    environ: Mapping[str, str],
    directory: str | None = None,
    readFile: ReadFile | None = None,
) -> Config:
    """
    Parse and validate configuration text.

    @param source: The file name used in error messages.
    @param environ: Where C{${NAME}} references are looked up.
    @param directory: Where the config file is: relative paths in it (the
        mode file, the token file) are taken from there.  L{None} for a
        config that is not a file; it then has no mode file unless one is
        given in full.
    @param readFile: How the token file is read; L{None} refuses a config
        that names one, keeping this function free of I/O for callers that
        do not give one.
    @raise ConfigError: On the first problem found.
    """
    root = _compose(text, source)
    return _ConfigReader(source, environ, directory, readFile=readFile).read(root)


def checkConfig(
    text: str,
    source: str,
    environ: Mapping[str, str],
    directory: str | None = None,
    readFile: ReadFile | None = None,
) -> list[ConfigError]:
    """
    Every problem in configuration text, not only the first: what
    C{ccrouter config check} and C{ccrouter config edit} report.

    Reading goes on after a problem with the next field, upstream, route,
    mode or failover target.  A reference to something whose own definition
    was wrong (a route naming an upstream that has a bad URL) is not
    reported again.

    @param source: As for L{parseConfig}.
    @param environ: As for L{parseConfig}.
    @param directory: As for L{parseConfig}.
    @param readFile: As for L{parseConfig}.
    @return: The problems, by line; empty when L{parseConfig} would succeed.
    """
    try:
        root = _compose(text, source)
    except ConfigError as e:
        return [e]
    problems: list[ConfigError] = []
    try:
        _ConfigReader(source, environ, directory, problems, readFile=readFile).read(
            root
        )
    except ConfigError as e:
        problems.append(e)
    unique: dict[str, ConfigError] = {}
    for problem in problems:
        unique.setdefault(str(problem), problem)
    return sorted(unique.values(), key=lambda problem: problem.line or 0)


def _compose(text: str, source: str) -> _Located:
    """
    The YAML tree of configuration text; an empty text is an empty mapping.
    """
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ConfigError(
            source,
            None,
            "",
            f"is larger than {MAX_CONFIG_BYTES // 1024} KiB; a config file is"
            " a few KiB",
        )
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = None if mark is None else mark.line + 1
        raise ConfigError(source, line, "", f"invalid YAML: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(source, None, "", f"invalid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(source, None, "", "invalid YAML: nested too deeply") from None
    if root is None:
        root = yaml.MappingNode("tag:yaml.org,2002:map", [])
    return _Located(root, "", source)


def literalSecrets(text: str) -> list[str]:
    """
    The key paths (C{upstreams.zai.auth.value}) of credentials written into
    configuration text as they are, rather than as C{${NAME}} references to
    the environment.  Pure; text that is not valid YAML has none.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return []
    found: list[str] = []

    def literal(node: yaml.Node) -> bool:
        if not isinstance(node, yaml.ScalarNode) or _isNull(node):
            return False
        value = str(node.value)
        if not value.strip():
            return False
        return not any(not match.group(1) for match in _ENV_REFERENCE.finditer(value))

    # Aliases make the tree a graph that nine levels of anchors blow up to
    # billions of paths: each node is looked at once.
    seen: set[int] = set()

    def walk(node: yaml.Node, key: str, depth: int) -> None:
        if depth > 50 or id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for keyNode, valueNode in node.value:
                name = (
                    str(keyNode.value) if isinstance(keyNode, yaml.ScalarNode) else "?"
                )
                path = f"{key}.{name}" if key else name
                if name == "auth" and isinstance(valueNode, yaml.MappingNode):
                    for authKey, authValue in valueNode.value:
                        if (
                            isinstance(authKey, yaml.ScalarNode)
                            and authKey.value == "value"
                            and literal(authValue)
                        ):
                            found.append(f"{path}.value")
                else:
                    walk(valueNode, path, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{key}[{index}]", depth + 1)

    if root is not None:
        walk(root, "", 0)
    return found


def permissionWarning(path: str, text: str) -> str | None:
    """
    The start-up warning for a config file that others may read and that
    holds a credential written in full (not a C{${NAME}} reference), or
    L{None} when there is nothing to warn about.

    @param path: The config file, whose permissions are looked at.
    @param text: Its contents.
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return None
    secrets = literalSecrets(text)
    if not secrets:
        return None
    readers = "its group and others" if mode & stat.S_IROTH else "its group"
    keys = ", ".join(secrets)
    return (
        f"{path} holds a key written in full ({keys}) and can be read by"
        f" {readers} (mode {mode:04o}); run 'chmod 600 {path}', or write"
        " the key as ${NAME} and set it in the environment"
    )


def defaultListen(host: str, port: int) -> str:
    """
    The endpoint string for C{server.host}/C{server.port}.
    """
    if ":" in host:
        escaped = host.replace(":", "\\:")
        return f"tcp6:{port}:interface={escaped}"
    return f"tcp:{port}:interface={host}"


@frozen
class _Located:
    """
    A YAML node with the dotted key path that reached it.
    """

    node: yaml.Node
    key: str
    source: str

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def error(self, problem: str) -> ConfigError:
        return ConfigError(self.source, self.line, self.key, problem)

    def child(self, node: yaml.Node, name: str | int) -> _Located:
        if isinstance(name, int):
            return _Located(node, f"{self.key}[{name}]", self.source)
        return _Located(node, f"{self.key}.{name}" if self.key else name, self.source)


#: What an upstream may say, under C{upstreams} or in a route.
_UPSTREAM_KEYS = (
    "url",
    "auth",
    "timeouts",
    "format",
    "profile",
    "max_tokens",
    "compat",
)
_ENV_REFERENCE = re.compile(r"\$(\$?)\{([^}]*)\}")
#: What a local token may be: it travels as a header value, in Claude
#: Code's C{ANTHROPIC_CUSTOM_HEADERS} (one C{Name: value} per line).
_TOKEN = re.compile(r"[!-~]{16,1024}\Z")
_TOKEN_RULE = "16 to 1024 ASCII letters, digits or punctuation, without spaces"  # noqa: S105


def _isToken(text: str) -> bool:
    return _TOKEN.match(text) is not None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: Framing and hop-by-hop headers: a credential there would corrupt the
#: request or be dropped on the way.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "accept-encoding",
        "content-type",
    }
)
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*\Z")
_SIZE = re.compile(r"\s*([0-9]+)\s*(B|KiB|MiB|GiB)?\s*\Z")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_DURATION_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}
_TYPE_NAMES = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "empty",
    "tag:yaml.org,2002:map": "a mapping",
    "tag:yaml.org,2002:seq": "a list",
}


def _describe(node: yaml.Node) -> str:
    return _TYPE_NAMES.get(node.tag, node.tag)


@define
class _Damage:
    """
    What a reader collecting every problem found broken, so that references
    to it are not reported as problems of their own.

    @ivar upstreams: Named upstreams whose definitions failed.
    @ivar modes: Modes whose definitions failed.
    @ivar allUpstreams: The whole C{upstreams} section failed.
    @ivar allModes: The whole C{modes} section failed.
    """

    upstreams: set[str] = field(factory=set)
    modes: set[str] = field(factory=set)
    allUpstreams: bool = False
    allModes: bool = False

    def upstream(self, name: str) -> bool:
        return self.allUpstreams or name in self.upstreams

    def mode(self, name: str) -> bool:
        return self.allModes or name in self.modes


class _Recovery:
    """
    A point reading can go on from: a L{ConfigError} raised inside is
    recorded and swallowed when problems are being collected, and raised
    otherwise.
    """

    def __init__(self, problems: list[ConfigError] | None) -> None:
        self._problems = problems
        self.failed = False

    def __enter__(self) -> _Recovery:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if self._problems is None or not isinstance(value, ConfigError):
            return False
        self._problems.append(value)
        self.failed = True
        return True


#: What stands in for a part of the config that failed while every problem
#: is being collected; the config built from it is never used.
_BROKEN_UPSTREAM = Upstream(
    name="",
    scheme="https",
    host="invalid",
    port=443,
    basePath="",
    auth=None,
    forwardsClientCredentials=False,
    timeouts=Timeouts(),
)


@frozen
class _ConfigReader:
    """
    Walks the composed YAML tree, checking each key against the schema.

    @ivar problems: Where problems are collected, reading going on after
        each; L{None} to raise the first one.
    """

    source: str
    environ: Mapping[str, str]
    directory: str | None
    problems: list[ConfigError] | None = None
    damage: _Damage = field(factory=_Damage)
    readFile: ReadFile | None = None

    def _recovering(self) -> _Recovery:
        return _Recovery(self.problems)

    def _report(self, error: ConfigError) -> None:
        """
        Raise C{error}, or record it when problems are being collected.
        """
        if self.problems is None:
            raise error
        self.problems.append(error)

    def read(self, root: _Located) -> Config:
        top = self._mapping(
            root,
            (
                "server",
                "default",
                "timeouts",
                "upstreams",
                "routes",
                "modes",
                "default_mode",
                "mode_file",
                "breaker",
            ),
        )
        timeouts = Timeouts()
        if "timeouts" in top:
            with self._recovering():
                timeouts = self._timeouts(top["timeouts"], Timeouts())
        server = ServerSettings(listen=(defaultListen(DEFAULT_HOST, DEFAULT_PORT),))
        with self._recovering():
            server = self._server(top.get("server"))
        default = _BROKEN_UPSTREAM
        with self._recovering():
            default = self._default(top.get("default"), timeouts)
        named: dict[str, Upstream] = {}
        with self._recovering() as recovery:
            named = self._namedUpstreams(top.get("upstreams"), timeouts)
        self.damage.allUpstreams |= recovery.failed
        routes: tuple[Route, ...] = ()
        with self._recovering():
            routes = self._routes(top.get("routes"), default, named, timeouts)
        modes: tuple[Mode, ...] = ()
        with self._recovering() as recovery:
            modes = self._modes(top.get("modes"), default, named, timeouts)
        self.damage.allModes |= recovery.failed
        if _hasItems(top.get("modes")) and _hasItems(top.get("routes")):
            self._report(
                top["routes"].error(
                    "with 'modes', routes belong inside a mode (modes.NAME: [routes])"
                )
            )
        defaultMode = IMPLICIT_MODE
        with self._recovering():
            defaultMode = self._defaultMode(top.get("default_mode"), modes)
        modeFile = None
        with self._recovering():
            modeFile = self._modeFile(top.get("mode_file"))
        breaker = BreakerPolicy()
        with self._recovering():
            breaker = self._breaker(top.get("breaker"))
        return Config(
            source=self.source,
            server=server,
            default=default,
            routes=routes,
            upstreams=tuple(named.values()),
            modes=modes or (Mode(IMPLICIT_MODE, routes),),
            defaultMode=defaultMode,
            modeFile=modeFile,
            breaker=breaker,
        )

    # Sections

    def _server(self, located: _Located | None) -> ServerSettings:
        fields = self._mapping(
            located,
            (
                "host",
                "port",
                "listen",
                "max_body_bytes",
                "allowed_hosts",
                "allowed_origins",
                "token",
                "token_file",
                "allow_remote",
                "client_timeouts",
                "max_connections",
                "max_streams",
                "drain_timeout",
            ),
        )
        limits = self._clientLimits(fields)
        token = tokenFile = None
        if "token" in fields:
            with self._recovering():
                token = self._nonEmptyString(fields["token"])
                if not _isToken(token):
                    raise fields["token"].error(f"must be {_TOKEN_RULE}")
        if "token_file" in fields:
            with self._recovering():
                if "token" in fields:
                    raise fields["token_file"].error(
                        "give 'token' or 'token_file', not both"
                    )
                tokenFile = self._path(fields["token_file"])
                token = self._tokenFromFile(fields["token_file"], tokenFile)
        allowRemote = False
        if "allow_remote" in fields:
            with self._recovering():
                allowRemote = self._boolean(fields["allow_remote"])
                if allowRemote and "token" not in fields and "token_file" not in fields:
                    raise fields["allow_remote"].error(
                        "needs server.token or server.token_file: without a token,"
                        " anyone who can reach the port could use your keys"
                    )
        host = DEFAULT_HOST
        if "host" in fields:
            with self._recovering():
                host = self._nonEmptyString(fields["host"])
                if any(c.isspace() for c in host):
                    raise fields["host"].error("must not contain spaces")
        port = DEFAULT_PORT
        if "port" in fields:
            with self._recovering():
                port = self._integer(fields["port"], 0, 65535)
        portOverride = None
        with self._recovering():
            portOverride = self._portOverride()
        listen: tuple[str, ...] = ()
        if portOverride is not None:
            port = portOverride
            listen = (defaultListen(host, port),)
        elif "listen" in fields:
            with self._recovering():
                listen = tuple(self._each(fields["listen"], self._nonEmptyString))
                if not _hasItems(fields["listen"]):
                    raise fields["listen"].error("must name at least one endpoint")
        else:
            listen = (defaultListen(host, port),)
        maxBody = DEFAULT_MAX_BODY_BYTES
        if "max_body_bytes" in fields:
            with self._recovering():
                maxBody = self._size(fields["max_body_bytes"])
        allowedHosts: frozenset[str] = frozenset()
        if "allowed_hosts" in fields:
            with self._recovering():
                allowedHosts = frozenset(
                    name.lower()
                    for name in self._each(
                        fields["allowed_hosts"], self._nonEmptyString
                    )
                )
        allowedOrigins: frozenset[str] = frozenset()
        if "allowed_origins" in fields:
            with self._recovering():
                allowedOrigins = frozenset(
                    self._each(fields["allowed_origins"], self._nonEmptyString)
                )
        return ServerSettings(
            listen=listen,
            host=host,
            port=port,
            maxBodyBytes=maxBody,
            allowedHosts=allowedHosts,
            allowedOrigins=allowedOrigins,
            token=token,
            limits=limits,
            tokenFile=tokenFile,
            allowRemote=allowRemote,
        )

    def _tokenFromFile(self, located: _Located, path: str) -> str:
        """
        The token in C{server.token_file}, read anew on every load so that a
        reload picks up a rotated one.  Messages name the file, never any of
        its content.
        """
        if self.readFile is None:
            raise located.error(f"{path}: files cannot be read here")
        try:
            data = self.readFile(path)
        except FileNotFoundError:
            raise located.error(
                f"{path} does not exist ('ccrouter init' creates it)"
            ) from None
        except OSError as e:
            raise located.error(f"{path}: cannot read: {e.strerror or e}") from None
        except ValueError as e:
            raise located.error(f"{path} {e}") from None
        if len(data) > MAX_TOKEN_FILE_BYTES:
            raise located.error(
                f"{path} is larger than a token file can be"
                f" ({MAX_TOKEN_FILE_BYTES} bytes)"
            )
        try:
            token = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise located.error(f"{path} is not UTF-8 text") from None
        if not token:
            raise located.error(f"{path} is empty")
        if not _isToken(token):
            raise located.error(f"{path} must hold one token: {_TOKEN_RULE}")
        return token

    def _clientLimits(self, fields: Mapping[str, _Located]) -> ClientLimits:
        names = {
            "headers": "headers",
            "body_idle": "bodyIdle",
            "body_total": "bodyTotal",
            "keep_alive": "keepAlive",
            "write_stall": "writeStall",
        }
        values: dict[str, float] = {}
        timeouts = self._mapping(fields.get("client_timeouts"), tuple(names))
        for key, item in timeouts.items():
            with self._recovering():
                values[names[key]] = self._duration(item)
        counts: dict[str, int] = {}
        for key, name in (
            ("max_connections", "maxConnections"),
            ("max_streams", "maxStreams"),
        ):
            if key in fields:
                with self._recovering():
                    counts[name] = self._integer(fields[key], 1, 100_000)
        if "drain_timeout" in fields:
            with self._recovering():
                values["drain"] = self._duration(fields["drain_timeout"])
        return ClientLimits(**values, **counts)  # type: ignore[arg-type]

    def _portOverride(self) -> int | None:
        text = self.environ.get(PORT_VARIABLE)
        if text is None:
            return None
        if (
            not (text.strip().isascii() and text.strip().isdigit())
            or not 0 < int(text) <= 65535
        ):
            raise ConfigError(
                "environment", None, PORT_VARIABLE, "must be a port number (1-65535)"
            )
        return int(text)

    def _default(self, located: _Located | None, timeouts: Timeouts) -> Upstream:
        fields = self._mapping(located, ("url", "auth", "timeouts"))
        override = self.environ.get(UPSTREAM_VARIABLE)
        if override is not None:
            auth = None
            if "auth" in fields:
                with self._recovering():
                    auth = self._auth(fields["auth"])
            if "timeouts" in fields:
                with self._recovering():
                    timeouts = self._timeouts(fields["timeouts"], timeouts)
            return self._upstreamFromParts(
                "default",
                override,
                None,
                auth,
                timeouts,
                auth is None,
                urlKey=UPSTREAM_VARIABLE,
            )
        return self._upstream(
            located,
            fields,
            "default",
            timeouts,
            forwardsClientCredentials=True,
            defaultUrl=DEFAULT_UPSTREAM_URL,
        )

    def _namedUpstreams(
        self, located: _Located | None, timeouts: Timeouts
    ) -> dict[str, Upstream]:
        named: dict[str, Upstream] = {}
        for name, item in self._mapping(located, None).items():
            with self._recovering() as recovery:
                if name == "default":
                    raise item.error("'default' is reserved for the default upstream")
                fields = self._mapping(item, _UPSTREAM_KEYS)
                named[name] = self._upstream(
                    item, fields, name, timeouts, forwardsClientCredentials=False
                )
            if recovery.failed:
                self.damage.upstreams.add(name)
        return named

    def _routes(
        self,
        located: _Located | None,
        default: Upstream,
        named: Mapping[str, Upstream],
        timeouts: Timeouts,
    ) -> tuple[Route, ...]:
        if located is None:
            return ()
        routes = []
        for item in self._list(located):
            with self._recovering():
                route = self._route(item, default, named, timeouts)
                if route is not None:
                    routes.append(route)
        return tuple(routes)

    def _route(
        self,
        item: _Located,
        default: Upstream,
        named: Mapping[str, Upstream],
        timeouts: Timeouts,
    ) -> Route | None:
        """
        One route, or L{None} when problems are collected and it has some.
        """
        fields = self._mapping(item, ("match", "model", "upstream"))
        match: str | None = None
        if "match" not in fields:
            self._report(item.error("a route needs 'match' (a model name pattern)"))
        else:
            with self._recovering():
                match = self._nonEmptyString(fields["match"])
        model = None
        modelRecovery = self._recovering()
        if "model" in fields:
            with modelRecovery:
                model = self._nonEmptyString(fields["model"])
        upstream: Upstream | None = default
        if "upstream" in fields:
            upstream = None
            with self._recovering():
                upstream = self._routeUpstream(fields["upstream"], named, timeouts)
        if match is None or upstream is None or modelRecovery.failed:
            return None
        return Route(
            pattern=ModelPattern.parse(match),
            upstream=upstream,
            model=model,
            label=item.key,
        )

    def _modes(
        self,
        located: _Located | None,
        default: Upstream,
        named: Mapping[str, Upstream],
        timeouts: Timeouts,
    ) -> tuple[Mode, ...]:
        if located is None:
            return ()
        fields = self._mapping(located, None)
        if not fields:
            raise located.error("must define at least one mode")
        routeSets: dict[str, Mode] = {}
        failovers: dict[str, _Located] = {}
        for name, item in fields.items():
            if not _MODE_NAME.match(name):
                self._report(
                    item.error(
                        "a mode name is letters, digits, '_', '.' and '-', starting"
                        " with a letter or digit"
                    )
                )
                self.damage.modes.add(name)
                continue
            if isinstance(item.node, yaml.MappingNode):
                failovers[name] = item
            else:
                with self._recovering() as recovery:
                    routes = self._routes(item, default, named, timeouts)
                    routeSets[name] = Mode(name=name, routes=routes)
                if recovery.failed:
                    self.damage.modes.add(name)
        modes = dict(routeSets)
        for name, item in failovers.items():
            with self._recovering() as recovery:
                modes[name] = self._failoverMode(
                    name, item, routeSets, failovers, named
                )
            if recovery.failed:
                self.damage.modes.add(name)
        return tuple(modes[name] for name in fields if name in modes)

    def _failoverMode(
        self,
        name: str,
        located: _Located,
        routeSets: Mapping[str, Mode],
        failovers: Mapping[str, _Located],
        named: Mapping[str, Upstream],
    ) -> Mode:
        fields = self._mapping(located, ("failover",))
        if "failover" not in fields:
            raise located.error(
                "a mode is a list of routes, or a mapping with 'failover'"
                " (a list of modes or upstreams)"
            )
        targets: list[Target] = []
        for item in self._list(fields["failover"]):
            with self._recovering():
                target = self._failoverTarget(
                    item, targets, routeSets, failovers, named
                )
                if target is not None:
                    targets.append(target)
        if not _hasItems(fields["failover"]):
            raise fields["failover"].error("must name at least one mode or upstream")
        return Mode(name=name, routes=(), failover=tuple(targets))

    def _failoverTarget(
        self,
        item: _Located,
        targets: list[Target],
        routeSets: Mapping[str, Mode],
        failovers: Mapping[str, _Located],
        named: Mapping[str, Upstream],
    ) -> Target | None:
        """
        One failover target, or L{None} when problems are collected and it
        names a mode or upstream that is itself broken.
        """
        targetName = self._nonEmptyString(item)
        if targetName in failovers:
            raise item.error(
                f"{targetName!r} is itself a failover mode; list the modes"
                " or upstreams it fails over between instead"
            )
        if targetName in routeSets and targetName in named:
            raise item.error(
                f"{targetName!r} is both a mode and an upstream; rename one"
            )
        if any(target.name == targetName for target in targets):
            raise item.error(f"{targetName!r} is listed twice")
        if targetName in routeSets:
            return Target(targetName, "mode", routeSets[targetName].routes)
        if targetName in named:
            everything = Route(
                pattern=ModelPattern.parse("*"),
                upstream=named[targetName],
                model=None,
                label=item.key,
            )
            return Target(targetName, "upstream", (everything,))
        if self.damage.mode(targetName) or self.damage.upstream(targetName):
            return None
        raise item.error(
            f"no mode or upstream named {targetName!r}"
            + _suggestion(targetName, (*routeSets, *named))
        )

    def _defaultMode(self, located: _Located | None, modes: tuple[Mode, ...]) -> str:
        if located is None:
            return modes[0].name if modes else IMPLICIT_MODE
        name = self._nonEmptyString(located)
        names = [mode.name for mode in modes] or [IMPLICIT_MODE]
        if name not in names and not self.damage.mode(name):
            if not modes:
                raise located.error("there are no 'modes' to choose from")
            raise located.error(
                f"no mode named {name!r}" + _suggestion(name, tuple(names))
            )
        return name

    def _modeFile(self, located: _Located | None) -> str | None:
        if located is None:
            if self.directory is None:
                return None
            return os.path.join(self.directory, DEFAULT_MODE_FILE)
        return self._path(located)

    def _path(self, located: _Located) -> str:
        """
        A file the config names: C{~} expanded, relative to the config's
        directory.
        """
        path = os.path.expanduser(self._nonEmptyString(located))
        if "\0" in path:
            raise located.error("a path cannot contain NUL")
        if os.path.isabs(path):
            return path
        if self.directory is None:
            raise located.error(
                "a relative path needs a config file to be relative to; give"
                " the full path"
            )
        return os.path.join(self.directory, path)

    def _breaker(self, located: _Located | None) -> BreakerPolicy:
        fields = self._mapping(located, ("failures", "timeouts", "cooldowns"))
        policy = BreakerPolicy()
        failures = policy.failures
        if "failures" in fields:
            with self._recovering():
                failures = self._integer(fields["failures"], 1, 1000)
        timeouts = policy.timeouts
        if "timeouts" in fields:
            with self._recovering():
                timeouts = self._integer(fields["timeouts"], 1, 1000)
        cooldowns = policy.cooldowns
        if "cooldowns" in fields:
            with self._recovering():
                cooldowns = tuple(self._each(fields["cooldowns"], self._duration))
                if not _hasItems(fields["cooldowns"]):
                    raise fields["cooldowns"].error("must list at least one duration")
            cooldowns = cooldowns or policy.cooldowns
        return BreakerPolicy(failures=failures, timeouts=timeouts, cooldowns=cooldowns)

    def _routeUpstream(
        self, located: _Located, named: Mapping[str, Upstream], timeouts: Timeouts
    ) -> Upstream:
        if isinstance(located.node, yaml.ScalarNode) and located.node.tag.endswith(
            ":str"
        ):
            name = self._string(located)
            if name == "default":
                raise located.error("leave 'upstream' out to use the default upstream")
            if name not in named:
                if self.damage.upstream(name):
                    return _BROKEN_UPSTREAM
                raise located.error(
                    f"no upstream named {name!r} under 'upstreams'"
                    + _suggestion(name, named)
                )
            return named[name]
        fields = self._mapping(located, _UPSTREAM_KEYS)
        upstream = self._upstream(
            located, fields, "", timeouts, forwardsClientCredentials=False
        )
        # Written in place, it is known by its host in logs and errors.
        return evolve(upstream, name=upstream.host)

    # Upstreams

    def _upstream(
        self,
        located: _Located | None,
        fields: Mapping[str, _Located],
        name: str,
        timeouts: Timeouts,
        forwardsClientCredentials: bool,
        defaultUrl: str | None = None,
    ) -> Upstream:
        auth = None
        if "auth" in fields:
            with self._recovering():
                auth = self._auth(fields["auth"])
        if "timeouts" in fields:
            with self._recovering():
                timeouts = self._timeouts(fields["timeouts"], timeouts)
        if "url" in fields:
            url, urlField = self._string(fields["url"]), fields["url"]
        elif defaultUrl is not None:
            url, urlField = defaultUrl, None
        else:
            assert located is not None
            raise located.error("an upstream needs 'url'")
        upstream = self._upstreamFromParts(
            name,
            url,
            urlField,
            auth,
            timeouts,
            forwardsClientCredentials and auth is None,
        )
        return self._dialect(upstream, fields)

    def _dialect(self, upstream: Upstream, fields: Mapping[str, _Located]) -> Upstream:
        """
        The upstream's wire format and, for it, its profile: an OpenAI-format
        upstream's quirks, or what an Anthropic-compatible one rejects.
        """
        wireFormat = "anthropic"
        if "format" in fields:
            wireFormat = self._string(fields["format"])
            if wireFormat not in ("anthropic", "openai"):
                raise fields["format"].error(
                    f"{wireFormat!r} is not a format; use 'anthropic' or 'openai'"
                )
        profile = None
        if wireFormat == "openai" and upstream.basePath.endswith("/chat/completions"):
            raise fields["url"].error(
                "give the base URL; /chat/completions is added to it"
            )
        if wireFormat == "openai":
            name = self._string(fields["profile"]) if "profile" in fields else "generic"
            if name not in PROFILES:
                raise fields["profile"].error(
                    f"no profile named {name!r}"
                    + _suggestion(name, tuple(PROFILES))
                    + f" (profiles: {', '.join(PROFILES)})"
                )
            profile = PROFILES[name]
            if "max_tokens" in fields:
                cap = self._integer(fields["max_tokens"], 1, 10_000_000)
                profile = evolve(profile, maxTokensCap=cap)
        elif "max_tokens" in fields:
            raise fields["max_tokens"].error(
                "'max_tokens' caps what is sent to a 'format: openai' upstream"
            )
        elif "profile" in fields:
            raise fields["profile"].error(
                "'profile' is for 'format: openai' upstreams; an"
                " Anthropic-compatible one takes 'compat'"
            )
        compat = None
        if "compat" in fields:
            if wireFormat != "anthropic":
                raise fields["compat"].error(
                    "'compat' is for Anthropic-format upstreams"
                )
            compat = self._compat(fields["compat"])
        return evolve(upstream, format=wireFormat, profile=profile, compat=compat)

    def _compat(self, located: _Located) -> AnthropicCompat:
        if isinstance(located.node, yaml.ScalarNode):
            name = self._string(located)
            if name not in COMPAT_PROFILES:
                raise located.error(
                    f"no compat profile named {name!r}"
                    + _suggestion(name, tuple(COMPAT_PROFILES))
                    + f" (compat profiles: {', '.join(COMPAT_PROFILES)})"
                )
            return COMPAT_PROFILES[name]
        fields = self._mapping(
            located, ("drop_betas", "drop_headers", "drop_fields", "set_headers")
        )

        def strings(key: str) -> tuple[str, ...]:
            if key not in fields:
                return ()
            return tuple(self._nonEmptyString(item) for item in self._list(fields[key]))

        setHeaders: list[tuple[str, str]] = []
        for header, value in self._mapping(fields.get("set_headers"), None).items():
            if not _HEADER_NAME.match(header) or header.lower() in _RESERVED_HEADERS:
                raise value.error(f"{header!r} cannot be set here")
            setHeaders.append((header, self._string(value)))
        return AnthropicCompat(
            name="custom",
            dropBetas=frozenset(strings("drop_betas")),
            dropHeaders=frozenset(name.lower() for name in strings("drop_headers")),
            dropFields=strings("drop_fields"),
            setHeaders=tuple(setHeaders),
        )

    def _upstreamFromParts(
        self,
        name: str,
        url: str,
        urlField: _Located | None,
        auth: Auth | None,
        timeouts: Timeouts,
        forwardsClientCredentials: bool,
        urlKey: str | None = None,
    ) -> Upstream:
        def problem(text: str) -> ConfigError:
            if urlKey is not None:
                return ConfigError("environment", None, urlKey, text)
            if urlField is None:
                return ConfigError(self.source, None, "default.url", text)
            return urlField.error(text)

        # Messages never repeat the URL: it may hold an expanded secret.
        if not url.isascii():
            raise problem("use the ASCII (punycode) form of the URL")
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
            raise problem("the URL must not contain spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise problem("not a valid URL (check the host and port)") from None
        if parts.scheme not in ("http", "https"):
            raise problem("the URL must start with http:// or https://")
        if "@" in parts.netloc:
            raise problem("credentials in the URL are not allowed; use 'auth'")
        if not parts.hostname:
            raise problem("the URL has no host")
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            raise problem("a base URL cannot have a query or fragment")
        if ":" in parts.hostname:
            raise problem(
                "IPv6 literal hosts are not supported; use a host name such as"
                " localhost"
            )
        if port == 0:
            raise problem("port 0 cannot be connected to")
        return Upstream(
            name=name,
            scheme=parts.scheme,
            host=parts.hostname,
            port=port if port is not None else (443 if parts.scheme == "https" else 80),
            basePath=parts.path.rstrip("/"),
            auth=auth,
            forwardsClientCredentials=forwardsClientCredentials,
            timeouts=timeouts,
        )

    def _auth(self, located: _Located) -> Auth:
        fields = self._mapping(located, ("header", "value"))
        for required in ("header", "value"):
            if required not in fields:
                self._report(located.error(f"'auth' needs '{required}'"))
        header = value = ""
        if "header" in fields:
            with self._recovering():
                header = self._header(fields["header"])
        if "value" in fields:
            with self._recovering():
                value = self._string(fields["value"])
                if not value.strip():
                    raise fields["value"].error("must not be empty")
                if any(c in value for c in "\r\n\0"):
                    raise fields["value"].error("must not contain line breaks or NUL")
        return Auth(header=header, value=value)

    def _header(self, located: _Located) -> str:
        header = self._string(located)
        if not _HEADER_NAME.match(header):
            raise located.error(f"{header!r} is not a valid header name")
        if header.lower() in _RESERVED_HEADERS:
            raise located.error(
                f"{header!r} is set by the proxy itself and cannot carry a credential"
            )
        return header

    def _timeouts(self, located: _Located, base: Timeouts) -> Timeouts:
        names = {
            "connect": "connect",
            "headers": "headers",
            "stream_headers": "streamHeaders",
            "idle": "idle",
        }
        fields = self._mapping(located, tuple(names))
        values: dict[str, float] = {}
        for key, item in fields.items():
            with self._recovering():
                values[names[key]] = self._duration(item)
        return Timeouts(
            connect=values.get("connect", base.connect),
            headers=values.get("headers", base.headers),
            streamHeaders=values.get("streamHeaders", base.streamHeaders),
            idle=values.get("idle", base.idle),
        )

    # Node shapes

    def _mapping(
        self, located: _Located | None, allowed: tuple[str, ...] | None
    ) -> dict[str, _Located]:
        """
        The fields of a mapping, each checked against C{allowed} (any key
        when L{None}).  An absent or empty section is an empty mapping.
        """
        if located is None or _isNull(located.node):
            return {}
        if not isinstance(located.node, yaml.MappingNode):
            raise located.error(f"expected a mapping, found {_describe(located.node)}")
        fields: dict[str, _Located] = {}
        for keyNode, valueNode in located.node.value:
            keyAt = _Located(keyNode, located.key, located.source)
            if not (
                isinstance(keyNode, yaml.ScalarNode) and keyNode.tag.endswith(":str")
            ):
                self._report(
                    keyAt.error(f"keys must be strings, found {_describe(keyNode)}")
                )
                continue
            name = str(keyNode.value)
            if allowed is not None and name not in allowed:
                self._report(
                    located.child(keyNode, name).error(
                        f"unknown key {name!r}"
                        + _suggestion(name, allowed, everything=True)
                    )
                )
                continue
            if name in fields:
                self._report(located.child(keyNode, name).error("duplicate key"))
                continue
            fields[name] = located.child(valueNode, name)
        return fields

    def _each(self, located: _Located, read: Callable[[_Located], _T]) -> list[_T]:
        """
        C{read} applied to each item of a list, going on after a problem
        when problems are collected.
        """
        values = []
        for item in self._list(located):
            with self._recovering():
                values.append(read(item))
        return values

    def _list(self, located: _Located) -> Iterator[_Located]:
        if _isNull(located.node):
            return iter(())
        if not isinstance(located.node, yaml.SequenceNode):
            raise located.error(f"expected a list, found {_describe(located.node)}")
        return (
            located.child(node, index) for index, node in enumerate(located.node.value)
        )

    def _scalar(self, located: _Located, tags: tuple[str, ...], what: str) -> str:
        node = located.node
        if not isinstance(node, yaml.ScalarNode) or not node.tag.endswith(tags):
            raise located.error(f"expected {what}, found {_describe(node)}")
        return str(node.value)

    def _string(self, located: _Located) -> str:
        raw = self._scalar(located, (":str",), "a string")
        return self._expand(located, raw)

    def _nonEmptyString(self, located: _Located) -> str:
        value = self._string(located)
        if not value.strip():
            raise located.error("must not be empty")
        return value

    def _boolean(self, located: _Located) -> bool:
        self._scalar(located, (":bool",), "true or false")
        assert isinstance(located.node, yaml.ScalarNode)
        return bool(_CONSTRUCTOR.construct_yaml_bool(located.node))

    def _integer(self, located: _Located, low: int, high: int) -> int:
        self._scalar(located, (":int",), "an integer")
        assert isinstance(located.node, yaml.ScalarNode)
        value = int(_CONSTRUCTOR.construct_yaml_int(located.node))
        if not low <= value <= high:
            raise located.error(f"must be between {low} and {high}")
        return value

    def _duration(self, located: _Located) -> float:
        raw = self._scalar(
            located, (":int", ":float", ":str"), "a duration such as 30, 1.5 or '10m'"
        )
        match = _DURATION.match(self._expand(located, raw))
        if not match:
            raise located.error(
                f"{raw!r} is not a duration (seconds, or a number with ms, s, m or h)"
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if seconds <= 0:
            raise located.error("must be more than zero")
        return seconds

    def _size(self, located: _Located) -> int:
        raw = self._scalar(
            located, (":int", ":str"), "a size such as 33554432 or '32MiB'"
        )
        match = _SIZE.match(self._expand(located, raw))
        if not match:
            raise located.error(f"{raw!r} is not a size (bytes, or KiB, MiB, GiB)")
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
        if size <= 0:
            raise located.error("must be more than zero")
        return size

    def _expand(self, located: _Located, raw: str) -> str:
        """
        Replace C{${NAME}} with the environment variable; C{$${NAME}} is a
        literal C{${NAME}}.
        """

        def substitute(match: re.Match[str]) -> str:
            if match.group(1):
                return "${" + match.group(2) + "}"
            name = match.group(2)
            if not _ENV_NAME.match(name):
                raise located.error(
                    f"${{{name}}} is not a valid environment variable name"
                )
            value = self.environ.get(name)
            if value is None:
                raise located.error(f"environment variable {name} is not set")
            if value == "":
                raise located.error(f"environment variable {name} is empty")
            # A value pasted with its newline would end a header line early
            # (or smuggle another one) wherever it is used.
            if any(character in value for character in "\r\n\0"):
                raise located.error(
                    f"environment variable {name} holds a line break or NUL"
                )
            return value

        return _ENV_REFERENCE.sub(substitute, raw)


_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _isNull(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _hasItems(located: _Located | None) -> bool:
    """
    Whether a section is a list or mapping with something in it.
    """
    return (
        located is not None
        and isinstance(located.node, (yaml.MappingNode, yaml.SequenceNode))
        and bool(located.node.value)
    )


def _suggestion(
    name: str, choices: Mapping[str, object] | tuple[str, ...], everything: bool = False
) -> str:
    options = list(choices)
    close = difflib.get_close_matches(name, options, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    if everything and options:
        return f"; expected one of: {', '.join(options)}"
    return ""
