# -*- test-case-name: tests.test_tap -*-
"""
The outbound side: one persistent connection pool shared by every upstream.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import IAgent

from ccrouter.config import Upstream


class _QuietClientFactory(_HTTP11ClientFactory):
    """
    Twisted logs "Starting factory" for every new upstream connection, which
    buries the lines that matter.
    """

    noisy = False


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietClientFactory


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
            agent = Agent(self._reactor, pool=self._pool, connectTimeout=timeout)
            self._agents[timeout] = agent
        return agent

    def stopService(self) -> Deferred[None]:
        super().stopService()
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed
