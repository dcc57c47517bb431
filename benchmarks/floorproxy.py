"""
The floor under ccrouter's per-request cost: the smallest reverse proxy
Twisted can make (a C{Site}, an C{Agent} on a persistent pool, headers
copied minus hop-by-hop ones, the body relayed as it comes), with none of
ccrouter's work: no treq, no checks, no routing, no log, no metrics.

    python benchmarks/floorproxy.py http://127.0.0.1:MOCKPORT

prints C{listening on http://127.0.0.1:PORT} and serves until killed.  Put
the same load on it and on C{twistd -n ccrouter} (pinned to the same CPU,
one after the other) to see what ccrouter adds over Twisted itself; the
README's performance section gives the figures.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"host",
        b"content-length",
        b"te",
        b"upgrade",
        b"trailer",
        b"proxy-connection",
        b"accept-encoding",
    }
)


@implementer(IBodyProducer)
class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Relay(Protocol):
    def __init__(self, request: Request) -> None:
        self._request = request

    def dataReceived(self, data: bytes) -> None:
        self._request.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._request.finish()


class FloorProxy(Resource):
    isLeaf = True

    def __init__(self, agent: Agent, upstream: bytes) -> None:
        super().__init__()
        self._agent = agent
        self._upstream = upstream

    def render(self, request: Request) -> Any:
        assert request.content is not None
        body = request.content.read()
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in HOP_BY_HOP:
                headers.setRawHeaders(name, values)
        pending = self._agent.request(
            request.method, self._upstream + request.uri, headers, _Body(body)
        )

        def relay(response: IResponse) -> None:
            request.setResponseCode(response.code, response.phrase)
            for name, values in response.headers.getAllRawHeaders():
                if name.lower() not in HOP_BY_HOP:
                    request.responseHeaders.setRawHeaders(name, values)
            if isinstance(response.length, int):
                request.responseHeaders.setRawHeaders(
                    b"content-length", [b"%d" % response.length]
                )
            request.write(b"")
            response.deliverBody(_Relay(request))

        pending.addCallback(relay)
        return NOT_DONE_YET


def main() -> None:
    pool = HTTPConnectionPool(reactor)
    pool.maxPersistentPerHost = 256
    site = Site(FloorProxy(Agent(reactor, pool=pool), sys.argv[1].encode("ascii")))
    port = reactor.listenTCP(0, site, interface="127.0.0.1", backlog=1024)  # type: ignore[attr-defined]
    print(f"listening on http://127.0.0.1:{port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
