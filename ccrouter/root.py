# -*- test-case-name: tests.test_proxy -*-
"""
The root of the resource tree: every request is checked here first, then
C{/health} is answered by ccrouter and everything else is proxied.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from ccrouter.guard import HEALTH_PATH, checkRequest
from ccrouter.health import HealthResource
from ccrouter.live import LiveState
from ccrouter.proxy import AgentFor, ProxyResource, writeError


class RootResource(Resource):
    """
    A leaf that dispatches on the exact raw path: Twisted's segment
    decoding would let C{/%68ealth} or C{//health} mean something else
    here than upstream.
    """

    isLeaf = True

    def __init__(self, live: LiveState, proxy: IResource, health: IResource) -> None:
        super().__init__()
        self._live = live
        self._proxy = proxy
        self._health = health

    def render(self, request: Request) -> int | bytes:
        server = self._live.config.server
        refusal = (
            None
            if getattr(request, "guarded", False)
            else checkRequest(
                request.method,
                request.uri,
                request.requestHeaders,
                server.allowedHosts,
                server.allowedOrigins,
                server.token,
            )
        )
        if refusal is not None:
            # The same request would be refused again: without this, Claude
            # Code retries a 401 for three minutes before showing it.
            request.responseHeaders.setRawHeaders(b"x-should-retry", [b"false"])
            for name, value in refusal.headers:
                request.responseHeaders.setRawHeaders(name, [value])
            writeError(request, refusal.error)
            return NOT_DONE_YET
        if request.uri.split(b"?", 1)[0] == HEALTH_PATH:
            return self._health.render(request)  # type: ignore[no-any-return]
        return self._proxy.render(request)  # type: ignore[no-any-return]


def resourceTree(
    live: LiveState, agentFor: AgentFor, clock: IReactorTime
) -> RootResource:
    """
    Everything ccrouter serves, over one live state.
    """
    return RootResource(
        live,
        proxy=ProxyResource(live, agentFor, clock),
        health=HealthResource(live),
    )
