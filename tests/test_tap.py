"""
Tests for L{ccrouter.tap}: options and the service tree, with a memory
reactor.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

from twisted.application.service import IService, IServiceCollection
from twisted.internet import endpoints
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI, BrowserLikePolicyForHTTPS

from ccrouter.agents import (
    ATTEMPT_DELAY,
    LOOPBACK_ATTEMPT_DELAY,
    PooledAgents,
    UpstreamEndpoints,
)
from ccrouter.tap import (
    LISTEN_BACKLOG,
    YOUNG_COLLECTION_THRESHOLD,
    ListeningService,
    Options,
    freezeStartupHeap,
    loadConfig,
    makeService,
    withBacklog,
)
from ccrouter.watch import Watcher


def parse(*arguments: str) -> Options:
    options = Options()
    options.parseOptions(list(arguments))
    return options


def walk(service: IService) -> Iterator[IService]:
    """
    A service and every service under it.
    """
    yield service
    if IServiceCollection.providedBy(service):
        for child in service:  # type: ignore[attr-defined]
            yield from walk(child)


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        options = parse()
        self.assertIsNone(options["config"])
        self.assertEqual(options["listen"], [])

    def test_repeatableListen(self) -> None:
        options = parse("--listen", "tcp:1", "--listen", "unix:/tmp/s", "-c", "x.yaml")
        self.assertEqual(options["listen"], ["tcp:1", "unix:/tmp/s"])
        self.assertEqual(options["config"], "x.yaml")

    def test_unknownOption(self) -> None:
        self.assertRaises(UsageError, parse, "--lisen", "tcp:1")


class MakeServiceTests(SynchronousTestCase):
    def service(self, *arguments: str) -> tuple[IServiceCollection, MemoryReactorClock]:
        import ccrouter.tap

        # MemoryReactor's ports report 0.0.0.0 whatever they were given.
        self.patch(ccrouter.tap, "exposedAddress", lambda address: None)
        reactor = MemoryReactorClock()
        service = makeService(parse(*arguments), reactor=reactor)
        assert IServiceCollection.providedBy(service)
        return service, reactor

    def test_embeddedDefault(self) -> None:
        """
        Without --config, the built-in config listens on 127.0.0.1:8080.
        """
        service, reactor = self.service()
        service.privilegedStartService()
        service.startService()
        [(port, _, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (8080, "127.0.0.1"))
        self.assertEqual(
            loadConfig(None, {}).default.origin, "https://api.anthropic.com"
        )
        self.successResultOf(service.stopService())

    def test_listenOverridesConfig(self) -> None:
        path = Path(self.mktemp())
        path.write_text("server: {port: 9999}\n")
        service, reactor = self.service(
            "--config",
            str(path),
            "--listen",
            "tcp:7001:interface=127.0.0.1",
            "--listen",
            "tcp:7002:interface=127.0.0.1",
        )
        service.privilegedStartService()
        self.assertEqual([server[0] for server in reactor.tcpServers], [7001, 7002])
        kinds = [type(child) for child in service]
        self.assertEqual(
            kinds, [Watcher, PooledAgents, ListeningService, ListeningService]
        )

    def test_invalidConfigExitsWithOneLine(self) -> None:
        """
        An invalid config stops start-up with status 1 and one line naming
        file, line and key, on the real standard error.
        """
        path = Path(self.mktemp())
        path.write_text("routes:\n  - match: x\n    uptream: {}\n")
        written = self.captureStderr(lambda: self.service("--config", str(path)))
        self.assertEqual(
            written,
            f"{path}:3: routes[0].uptream: unknown key 'uptream';"
            " did you mean 'upstream'?\n",
        )

    def test_missingConfigFile(self) -> None:
        path = self.mktemp()
        written = self.captureStderr(lambda: self.service("--config", path))
        self.assertEqual(written, f"{path}: cannot read: No such file or directory\n")

    def test_badEndpoint(self) -> None:
        written = self.captureStderr(lambda: self.service("--listen", "bogus:1"))
        self.assertEqual(
            written,
            "ccrouter: invalid listen endpoint 'bogus:1': Unknown endpoint type: 'bogus'\n",
        )

    def test_readableLiteralKeyWarned(self) -> None:
        """
        A config that holds a key written in full and that others can read
        draws a warning at start-up; once it is 0600, none.
        """
        from twisted.logger import LogEvent, formatEvent, globalLogPublisher

        logged: list[str] = []

        def observe(event: LogEvent) -> None:
            logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        path = Path(self.mktemp()).absolute()
        path.write_text(
            "upstreams:\n  zai:\n    url: https://api.z.ai\n"
            "    auth: {header: x-api-key, value: sk-literal-WARN-CANARY}\n"
        )
        path.chmod(0o644)
        self.service("--config", str(path))
        warnings = [line for line in logged if "written in full" in line]
        self.assertEqual(len(warnings), 1, logged)
        self.assertIn("upstreams.zai.auth.value", warnings[0])
        self.assertNotIn("WARN-CANARY", warnings[0])
        path.chmod(0o600)
        logged.clear()
        self.service("--config", str(path))
        self.assertEqual([line for line in logged if "written in full" in line], [])

    def test_environmentFixedAtStart(self) -> None:
        """
        C10: the environment is taken once, at start: a reload applies the
        changed config with the variables as they were then, not as they are
        by the time of the reload.
        """
        variable = "CCROUTER_TEST_C10_KEY"
        self.patch(os, "environ", {**os.environ, variable: "key-at-start"})
        path = Path(self.mktemp()).absolute()
        keyed = (
            "upstreams:\n  zai:\n    url: https://api.z.ai/api/anthropic\n"
            f"    auth: {{header: x-api-key, value: '${{{variable}}}'}}\n"
        )
        path.write_text(keyed)
        service, _ = self.service("--config", str(path))
        os.environ[variable] = "key-changed-later"
        path.write_text(keyed + "# changed\n")
        [watcher] = [child for child in walk(service) if isinstance(child, Watcher)]
        watcher.reloadNow()
        live = watcher._live
        assert live.lastReload is not None
        self.assertIsNone(live.lastReload.error)
        [upstream] = live.config.upstreams
        assert upstream.auth is not None
        self.assertEqual(upstream.auth.value, "key-at-start")

    def captureStderr(self, action: object) -> str:
        """
        Run C{action}, which must exit with status 1, and return what it
        wrote to the process's real standard error.
        """
        read, write = os.pipe()
        saved = os.dup(2)
        import sys

        original = sys.__stderr__
        sys.__stderr__ = os.fdopen(write, "w")  # type: ignore[misc]
        try:
            with self.assertRaises(SystemExit) as caught:
                action()  # type: ignore[operator]
        finally:
            sys.__stderr__.close()
            sys.__stderr__ = original  # type: ignore[misc]
            os.close(saved)
        self.assertEqual(caught.exception.code, 1)
        with os.fdopen(read) as pipe:
            return pipe.read()


class StartupHeapTests(SynchronousTestCase):
    def test_startupHeapFrozen(self) -> None:
        """
        What is alive at start-up is moved out of the collector's way (full
        collections walk only what was made since).
        """
        self.addCleanup(gc.unfreeze)
        self.addCleanup(gc.set_threshold, *gc.get_threshold())
        before = gc.get_freeze_count()
        freezeStartupHeap()
        self.assertGreater(gc.get_freeze_count(), before)
        self.assertEqual(gc.get_threshold()[0], YOUNG_COLLECTION_THRESHOLD)


class UpstreamEndpointTests(SynchronousTestCase):
    def endpointFor(self, url: bytes) -> object:
        endpoints = UpstreamEndpoints(
            MemoryReactorClock(), 5.0, BrowserLikePolicyForHTTPS()
        )
        endpoint = endpoints.endpointForURI(URI.fromBytes(url))
        # A plain connection writes through (tests.test_writethrough).
        return getattr(endpoint, "_endpoint", endpoint)

    def test_addressConnectsDirectly(self) -> None:
        """
        F1: an IP address is connected to directly: a refused connection is
        reported at once, so failover does not wait out a happy-eyeballs attempt
        delay.
        """
        endpoint = self.endpointFor(b"http://127.0.0.1:8317/v1/messages")
        assert isinstance(endpoint, TCP4ClientEndpoint)
        self.assertEqual((endpoint._host, endpoint._port), ("127.0.0.1", 8317))
        self.assertEqual(endpoint._timeout, 5.0)

    def test_hostNamesTryEachAddressInTurn(self) -> None:
        """
        A loopback name's addresses are tried in quick succession; a remote
        name's at the pace RFC 8305 allows.
        """
        endpoint = self.endpointFor(b"http://localhost:8317/")
        assert isinstance(endpoint, HostnameEndpoint)
        self.assertEqual(endpoint._attemptDelay, LOOPBACK_ATTEMPT_DELAY)
        self.assertEqual(endpoint._timeout, 5.0)
        endpoint = self.endpointFor(b"http://api.deepseek.com/")
        assert isinstance(endpoint, HostnameEndpoint)
        self.assertEqual(endpoint._attemptDelay, ATTEMPT_DELAY)

    def test_httpsIsWrappedInTLS(self) -> None:
        endpoint = self.endpointFor(b"https://api.z.ai/api/anthropic")
        self.assertIsInstance(endpoint._wrappedEndpoint, HostnameEndpoint)  # type: ignore[attr-defined]

    def test_endpointsAreReused(self) -> None:
        """
        One endpoint (for HTTPS, one set of TLS client options) per scheme,
        host and port, whatever the path, rather than one per request.
        """
        endpoints = UpstreamEndpoints(
            MemoryReactorClock(), 5.0, BrowserLikePolicyForHTTPS()
        )
        first = endpoints.endpointForURI(
            URI.fromBytes(b"https://api.z.ai/api/anthropic/v1/messages")
        )
        again = endpoints.endpointForURI(
            URI.fromBytes(b"https://api.z.ai/api/anthropic/v1/models?x=1")
        )
        self.assertIs(first, again)
        for other in (b"http://api.z.ai/", b"https://api.z.ai:8443/", b"https://z.ai/"):
            self.assertIsNot(endpoints.endpointForURI(URI.fromBytes(other)), first)

    def test_poolKeepsAConnectionPerRequestInFlight(self) -> None:
        """
        The pool keeps as many idle connections per upstream host as
        requests may be in flight (C{server.max_streams}, as it is now), so
        a burst at full concurrency does not close connections only to dial
        them again.
        """
        limit = [64]
        agents = PooledAgents(MemoryReactorClock(), lambda: limit[0])
        upstream = loadConfig(None, {}).default
        agents.agentFor(upstream)
        self.assertEqual(agents._pool.maxPersistentPerHost, 64)
        limit[0] = 200
        agents.agentFor(upstream)
        self.assertEqual(agents._pool.maxPersistentPerHost, 200)


class ExposedAddressTests(SynchronousTestCase):
    def test_exposed(self) -> None:
        """
        S1: wildcard and routable addresses are exposed; loopback ones and
        UNIX sockets are not.
        """
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        from ccrouter.tap import exposedAddress

        self.assertEqual(exposedAddress(IPv4Address("TCP", "0.0.0.0", 1)), "0.0.0.0")
        self.assertEqual(exposedAddress(IPv6Address("TCP", "::", 1)), "::")
        self.assertEqual(
            exposedAddress(IPv4Address("TCP", "192.168.1.2", 1)), "192.168.1.2"
        )
        self.assertIsNone(exposedAddress(IPv4Address("TCP", "127.0.0.1", 1)))
        self.assertIsNone(exposedAddress(IPv4Address("TCP", "127.3.4.5", 1)))
        self.assertIsNone(exposedAddress(IPv6Address("TCP", "::1", 1)))
        self.assertIsNone(exposedAddress(UNIXAddress(b"/tmp/s")))


class BacklogTests(SynchronousTestCase):
    def test_backlogAdded(self) -> None:
        """
        Stream listeners get a deep accept queue unless they name one; other
        kinds and explicit values are left alone.
        """
        self.assertEqual(
            withBacklog("tcp:8080:interface=127.0.0.1"),
            f"tcp:8080:interface=127.0.0.1:backlog={LISTEN_BACKLOG}",
        )
        self.assertEqual(
            withBacklog("tcp6:8080:interface=\\:\\:1"),
            f"tcp6:8080:interface=\\:\\:1:backlog={LISTEN_BACKLOG}",
        )
        self.assertEqual(
            withBacklog("unix:/run/ccrouter.sock"),
            f"unix:/run/ccrouter.sock:backlog={LISTEN_BACKLOG}",
        )
        self.assertEqual(withBacklog("tcp:0:backlog=7"), "tcp:0:backlog=7")
        self.assertEqual(
            withBacklog("systemd:domain=INET:index=0"), "systemd:domain=INET:index=0"
        )

    def test_listenerUsesIt(self) -> None:
        """
        The port ccrouter listens on is made with that backlog.
        """
        reactor = MemoryReactorClock()
        endpoint = endpoints.serverFromString(
            reactor, withBacklog("tcp:8080:interface=127.0.0.1")
        )
        endpoint.listen(Factory())
        self.assertEqual(reactor.tcpServers[0][2], LISTEN_BACKLOG)
