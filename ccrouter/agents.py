# -*- test-case-name: tests.test_tap -*-
"""
The outbound side: one persistent connection pool shared by every upstream.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import field, frozen
from twisted.application.service import Service
from twisted.internet.abstract import isIPAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from ccrouter.config import Upstream
from ccrouter.guard import isLoopback
from ccrouter.writethrough import enableWriteThrough, gatherEachRead

#: Between connection attempts to the addresses of a loopback name.
#: Twisted's default (0.3 s) is also how long a refused connection takes to
#: be reported, which would delay every failover by that much, and a local
#: server listening on 127.0.0.1 but not ::1 would pay it on every new
#: connection.
LOOPBACK_ATTEMPT_DELAY = 0.02
#: For other names: the least RFC 8305 recommends, so a remote host's
#: addresses are not all dialled at once.
ATTEMPT_DELAY = 0.1


class _QuietClientFactory(_HTTP11ClientFactory):
    """
    Twisted logs "Starting factory" for every new upstream connection, which
    buries the lines that matter.
    """

    noisy = False


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietClientFactory


@implementer(IAgentEndpointFactory)
@frozen
class UpstreamEndpoints:
    """
    Where an agent connects: straight to an IP address, or to every address
    of a host name in quick succession (the first to answer wins); TLS
    verified by C{policy} on top for C{https}.
    """

    reactor: object
    connectTimeout: float
    policy: IPolicyForHTTPS
    #: Each endpoint made, by scheme, host and port.  The Agent asks for an
    #: endpoint on every request, before it looks in the pool; for HTTPS a
    #: new one means new TLS client options (an OpenSSL context and the
    #: trust store set up again), which cost more than the rest of a
    #: request.  An endpoint connects as often as it is asked to, and a host
    #: name is resolved again on each connect.
    _endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = field(
        factory=dict, init=False, eq=False, repr=False
    )

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._newEndpoint(uri)
        return endpoint

    def _newEndpoint(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        endpoint: IStreamClientEndpoint
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(
                self.reactor, host, uri.port, timeout=self.connectTimeout
            )
        else:
            endpoint = HostnameEndpoint(
                self.reactor,
                host,
                uri.port,
                timeout=self.connectTimeout,
                attemptDelay=(
                    LOOPBACK_ATTEMPT_DELAY if isLoopback(host) else ATTEMPT_DELAY
                ),
            )
        if uri.scheme == b"https":
            creator = self.policy.creatorForNetloc(uri.host, uri.port)
            return wrapClientTLS(creator, endpoint)
        return _WriteThroughEndpoint(endpoint)


@implementer(IStreamClientEndpoint)
@frozen
class _WriteThroughEndpoint:
    """
    A plain TCP endpoint whose connections write through to the socket
    (see L{ccrouter.writethrough}): a request goes out as it is written,
    not one turn of the event loop later; and what handling one read of a
    response writes to the client goes out in one send.
    """

    _endpoint: IStreamClientEndpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        def connected(protocol: IProtocol) -> IProtocol:
            if enableWriteThrough(getattr(protocol, "transport", None)):
                gatherEachRead(protocol)
            return protocol

        return self._endpoint.connect(protocolFactory).addCallback(connected)


class PooledAgents(Service):
    """
    Hands out agents that share one keep-alive pool (TLS verified against the
    system trust store, host names checked by service-identity).  An agent
    carries its connect timeout, so there is one per distinct timeout.
    Stopping the service closes the idle pooled connections.
    """

    #: Idle connections kept per upstream host when nothing says how many
    #: requests may be in flight (ccrouter's default C{max_streams}).
    maxPersistentPerHost = 64
    #: Below the idle timeouts of common CDNs, so a pooled connection is not
    #: closed under a POST that cannot be retried.
    cachedConnectionTimeout = 50

    def __init__(
        self, reactor: object, maxPerHost: Callable[[], int] | None = None
    ) -> None:
        """
        @param maxPerHost: Returns how many requests may be in flight at
            once (C{server.max_streams}, which a reload may change): that
            many idle connections are kept per upstream host, so a burst at
            full concurrency finds a pooled connection for each request
            instead of closing the surplus and dialling new ones (a TCP, and
            for HTTPS a TLS, handshake each).
        """
        self._reactor = reactor
        self._pool = _QuietPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = self.maxPersistentPerHost
        self._pool.cachedConnectionTimeout = self.cachedConnectionTimeout
        self._maxPerHost = maxPerHost
        self._agents: dict[float, IAgent] = {}

    def agentFor(self, upstream: Upstream) -> IAgent:
        if self._maxPerHost is not None:
            self._pool.maxPersistentPerHost = self._maxPerHost()
        timeout = upstream.timeouts.connect
        agent = self._agents.get(timeout)
        if agent is None:
            endpoints = UpstreamEndpoints(
                self._reactor, timeout, BrowserLikePolicyForHTTPS()
            )
            agent = Agent.usingEndpointFactory(
                self._reactor, endpoints, pool=self._pool
            )
            self._agents[timeout] = agent
        return agent

    def stopService(self) -> Deferred[None]:
        super().stopService()
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed
