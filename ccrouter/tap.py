# -*- test-case-name: tests.test_tap -*-
"""
C{twistd ccrouter}: command-line options and the service tree.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
import time
from collections.abc import Callable, Mapping
from importlib.resources import files
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet import endpoints
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorThreads,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.server import Site

from ccrouter import __version__
from ccrouter.agents import PooledAgents
from ccrouter.breaker import BreakerBoard
from ccrouter.config import (
    MAX_CONFIG_BYTES,
    Config,
    ConfigError,
    parseConfig,
    permissionWarning,
)
from ccrouter.drain import GracefulStop
from ccrouter.hardening import LiveSecrets, configFileProblem, hardenProcess
from ccrouter.live import LiveState
from ccrouter.logs import (
    accessLogLine,
    setSecretSource,
    stdoutObserverFor,
    withLogObserver,
)
from ccrouter.root import resourceTree
from ccrouter.server import ProxySite
from ccrouter.state import loadBoard, saveBoard
from ccrouter.tokenfile import readTokenFile
from ccrouter.watch import Watcher

DEFAULT_CONFIG_NAME = "<built-in default config>"


class Options(usage.Options):
    synopsis = "[--config FILE] [--listen ENDPOINT ...]"
    longdesc = (
        "Route Claude Code's Anthropic API requests by model name: pass them"
        " to Anthropic unchanged or send them to another provider with its own"
        " key.  Without --config, a built-in config listens on"
        " 127.0.0.1:8080 and passes everything to https://api.anthropic.com."
    )
    optParameters = [
        ["config", "c", None, "The YAML configuration file."],
    ]
    compData = usage.Completions(optActions={"config": usage.CompleteFiles("*.yaml")})

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """
        Listen on a Twisted server endpoint string, e.g.
        tcp:8080:interface=127.0.0.1 (repeatable; replaces the config's
        address).
        """
        self["listen"].append(endpoint)

    def opt_version(self) -> None:
        """
        Print the ccrouter version and exit.
        """
        print(f"ccrouter {__version__}")
        sys.exit(0)


def loadConfig(path: str | None, environ: Mapping[str, str]) -> Config:
    """
    Read and parse the config file, or the built-in default when C{path} is
    L{None}.

    @raise ConfigError: If the file cannot be read or is not valid.
    """
    if path is None:
        text = files("ccrouter").joinpath("default-config.yaml").read_text("utf-8")
        return parseConfig(text, DEFAULT_CONFIG_NAME, environ)
    try:
        with open(path, encoding="utf-8") as configFile:
            # One character more than parseConfig takes: an oversized file
            # is refused without being read whole.
            text = configFile.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(path, None, "", f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "", "is not UTF-8 text") from None
    # The token file is read on every load, so a reload picks up a new token.
    return parseConfig(
        text,
        path,
        environ,
        os.path.dirname(os.path.abspath(path)),
        readFile=readTokenFile,
    )


def exitAtStartup(message: str) -> SystemExit:
    """
    Write one line to the real standard error (twistd has redirected
    C{sys.stderr} into the log by the time services start) and give the
    exception that ends the process with status 1.
    """
    stream = sys.__stderr__ or sys.stderr
    stream.write(message + "\n")
    stream.flush()
    return SystemExit(1)


class ListeningService(Service):
    """
    Listens on one endpoint.  Under twistd, binding happens in
    C{privilegedStartService}, before privileges are dropped; the C{twist}
    runner only calls C{startService}, which binds if that has not happened.
    A failed bind ends the process at start-up with a one-line reason
    instead of leaving it running without a port.
    """

    _log = Logger()

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        site: Site,
        reactor: IReactorCore,
        allowRemote: Callable[[], bool] = lambda: False,
    ):
        """
        @param allowRemote: Whether an address other hosts can reach may be
            listened on (C{server.allow_remote}).
        """
        self._allowRemote = allowRemote
        self._description = description
        self._endpoint = endpoint
        self._site = site
        self._reactor = reactor
        self._port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._port is None:
            self._listen()
        # Announced once the reactor runs (signal handlers installed), so the
        # line means "ready": a supervisor may stop it from then on.
        self._reactor.callWhenRunning(self._announce)

    def _listen(self) -> None:
        outcome: list[IListeningPort | Failure] = []
        self._endpoint.listen(self._site).addBoth(outcome.append)
        if not outcome:
            raise exitAtStartup(
                f"ccrouter: listening on {self._description} did not complete at once"
            )
        if isinstance(outcome[0], Failure):
            raise exitAtStartup(
                f"ccrouter: cannot listen on {self._description}:"
                f" {outcome[0].getErrorMessage()}"
            )
        port = outcome[0]
        # Checked on the bound address, so that endpoint strings without an
        # interface (tcp:8080 means every interface) and sockets handed over
        # by systemd are caught too.
        exposed = exposedAddress(port.getHost())
        if exposed is not None and not self._allowRemote():
            port.stopListening()
            raise exitAtStartup(
                f"ccrouter: refusing to listen on {exposed} ({self._description}):"
                " other machines could use your keys and login through it. Listen"
                " on 127.0.0.1 or ::1, or set server.allow_remote: true together"
                " with server.token_file"
            )
        self._port = port

    def _announce(self) -> None:
        if self._port is None:
            return
        address = self._port.getHost()
        if isinstance(address, (IPv4Address, IPv6Address)):
            host = f"[{address.host}]" if ":" in address.host else address.host
            self._log.info(
                "ccrouter {version} listening on http://{host}:{port}",
                version=__version__,
                host=host,
                port=address.port,
            )
        else:
            self._log.info(
                "ccrouter {version} listening on {address}",
                version=__version__,
                address=self._description,
            )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._port is None:
            return None
        port, self._port = self._port, None
        return port.stopListening()


def exposedAddress(address: object) -> str | None:
    """
    The address, if other hosts can reach it: an IP address that is not a
    loopback one (the wildcard C{0.0.0.0} and C{::} included).
    """
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return None
    try:
        ip = ipaddress.ip_address(address.host.split("%", 1)[0])
    except ValueError:
        return address.host
    return None if ip.is_loopback else address.host


#: How many connections the kernel may hold for ccrouter to accept.
#: Twisted's default, 50, overflows when a burst of subagents connects while
#: the reactor is busy, and a connection that overflows waits a second for
#: its SYN to be sent again.  (Linux caps it at C{net.core.somaxconn}.)
LISTEN_BACKLOG = 1024


def withBacklog(description: str) -> str:
    """
    A listen endpoint description with L{LISTEN_BACKLOG} added, for the
    stream kinds that take one and unless it names its own.
    """
    kind = description.split(":", 1)[0]
    if kind not in ("tcp", "tcp6", "unix") or "backlog=" in description:
        return description
    return f"{description}:backlog={LISTEN_BACKLOG}"


#: How many more container objects than were freed may be made before the
#: youngest generation is collected (CPython's default: 700).
YOUNG_COLLECTION_THRESHOLD = 10_000


def freezeStartupHeap() -> None:
    """
    Move everything alive once ccrouter has started (modules, the config,
    the service tree: some 60 000 objects) out of the garbage collector's
    sight.  They stay for the life of the process, yet every full
    collection walked them all: tens of milliseconds during which no
    stream moves, about once a second under load.  Objects made from now
    on are collected as before.

    And collect the youngest generation less often
    (L{YOUNG_COLLECTION_THRESHOLD}).  A request's objects are freed by
    reference counting when it ends (C{tests.test_proxy.GarbageTests}), so
    a collection finds almost nothing to free, only the requests in
    flight, which it walks and moves to the older generations to be walked
    again.  At CPython's 700, with 64 requests in flight, that was a
    collection every four requests and 40-50 us of each request's CPU;
    at 10 000, a collection (under 2 ms) every few thousand, and what
    waits for one is at most 10 000 objects of per-connection garbage.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def makeService(options: Mapping[str, Any], reactor: Any = None) -> IService:
    """
    The service tree for C{twistd ccrouter}: the file watcher, the shared
    upstream connection pool and one listener per endpoint, all serving the
    resource tree; stopped gracefully (L{GracefulStop}).

    @raise SystemExit: With status 1, after one line on standard error, if
        the config or an endpoint is invalid.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
        # The process twistd runs; tests bring their own reactor and keep
        # their own process as it is.
        hardenProcess(os.environ)
        reactor.callWhenRunning(freezeStartupHeap)
    configPath = options["config"]
    environ = dict(os.environ)
    try:
        config = loadConfig(configPath, environ)
    except ConfigError as e:
        raise exitAtStartup(str(e)) from None
    listen = tuple(options["listen"]) or config.server.listen

    def saveBreakers(path: str, board: BreakerBoard) -> None:
        saveBoard(path, board, time.monotonic, time.time)

    live = LiveState(
        config,
        now=time.monotonic,
        wallNow=time.time,
        configPath=None if configPath is None else os.path.abspath(configPath),
        saveBreakers=saveBreakers,
    )
    live.listening = tuple(listen)
    _restoreBreakers(live)
    if live.configPath is not None:
        _checkConfigFile(live.configPath)
    setSecretSource(LiveSecrets(lambda: live.config))

    # Stopped in order: listeners, then the requests in flight, and only then
    # the watcher and the upstream pool.
    top = GracefulStop(live.inflight, reactor, lambda: live.config.server.limits.drain)
    watcher = Watcher(
        live,
        live.configPath,
        lambda path: loadConfig(path, environ),
        reactor,
        callFromThread=(
            reactor.callFromThread if IReactorThreads.providedBy(reactor) else None
        ),
    )
    watcher.setServiceParent(top)
    agents = PooledAgents(reactor, lambda: live.config.server.limits.maxStreams)
    agents.setServiceParent(top)
    site = ProxySite(
        resourceTree(live, agents.agentFor, reactor),
        lambda: live.config.server,
        reactor=reactor,
        logFormatter=accessLogLine,
    )
    site.noisy = False
    top.clients = site
    for description in listen:
        try:
            endpoint = endpoints.serverFromString(reactor, withBacklog(description))
        except (ValueError, KeyError, TypeError) as e:
            raise exitAtStartup(
                f"ccrouter: invalid listen endpoint {description!r}: {e}"
            ) from None
        top.addListener(
            ListeningService(
                description,
                endpoint,
                site,
                reactor,
                allowRemote=lambda: live.config.server.allowRemote,
            )
        )
    return withLogObserver(top, stdoutObserverFor(options, reactor))


_log = Logger()


def _checkConfigFile(path: str) -> None:
    """
    Refuse a config that someone else could rewrite; warn about one that
    others can read while it holds a key written in full.
    """
    problem = configFileProblem(path)
    if problem is not None:
        raise exitAtStartup(problem)
    try:
        with open(path, encoding="utf-8") as configFile:
            text = configFile.read()
    except (OSError, UnicodeDecodeError):
        return
    warning = permissionWarning(path, text)
    if warning is not None:
        _log.warn("{problem}", problem=warning)


def _restoreBreakers(live: LiveState) -> None:
    path = live.breakerStateFile
    if path is None:
        return
    try:
        restored = loadBoard(path, live.board, live.now(), live.wallNow())
    except ValueError as e:
        _log.warn(
            "ignoring the breaker state in {path}: {problem}; every target"
            " starts closed",
            path=path,
            problem=str(e),
        )
        return
    if restored:
        _log.info(
            "restored the breaker state of {targets} from {path}",
            targets=", ".join(restored),
            path=path,
        )
