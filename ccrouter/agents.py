# -*- test-case-name: tests.test_tap -*-
"""
The outbound side: one persistent connection pool shared by every upstream.
"""

from __future__ import annotations

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.abstract import isIPAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
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

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
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
        return endpoint


class PooledAgents(Service):
    """
    Hands out agents that share one keep-alive pool (TLS verified against the
    system trust store, host names checked by service-identity).  An agent
    carries its connect timeout, so there is one per distinct timeout.
    Stopping the service closes the idle pooled connections.
    """

    #: Idle connections kept per upstream host; concurrency is not capped by it.
    maxPersistentPerHost = 16
    #: Below the idle timeouts of common CDNs, so a pooled connection is not
    #: closed under a POST that cannot be retried.
    cachedConnectionTimeout = 50

    def __init__(self, reactor: object) -> None:
        self._reactor = reactor
        self._pool = _QuietPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = self.maxPersistentPerHost
        self._pool.cachedConnectionTimeout = self.cachedConnectionTimeout
        self._agents: dict[float, IAgent] = {}

    def agentFor(self, upstream: Upstream) -> IAgent:
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
