# -*- test-case-name: tests.test_proxy -*-
"""
The root of the resource tree: every request is checked here first, then
C{/health} is answered by ccrouter and everything else is proxied.
"""

from __future__ import annotations

import hmac

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from ccrouter.config import TOKEN_HEADER
from ccrouter.errors import ProxyError
from ccrouter.guard import checkRequest
from ccrouter.health import HealthResource
from ccrouter.live import LiveState
from ccrouter.proxy import AgentFor, ProxyResource, writeError

HEALTH_PATH = b"/health"


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
        headers = request.requestHeaders
        # Two Host headers are as suspect as a foreign one.
        hosts = headers.getRawHeaders(b"host", [])
        origins = headers.getRawHeaders(b"origin", [])
        refusal = checkRequest(
            request.uri,
            hosts[0] if len(hosts) == 1 else None,
            b", ".join(origins) if origins else None,
            server.allowedHosts,
            server.allowedOrigins,
        )
        if refusal is not None:
            writeError(request, refusal)
            return NOT_DONE_YET
        isHealth = request.uri.split(b"?", 1)[0] == HEALTH_PATH
        if server.token is not None and not isHealth:
            presented = headers.getRawHeaders(TOKEN_HEADER.encode("ascii"), [])
            if len(presented) != 1 or not hmac.compare_digest(
                presented[0], server.token.encode("utf-8")
            ):
                writeError(
                    request,
                    ProxyError(
                        401,
                        "authentication_error",
                        f"ccrouter wants its local token in the {TOKEN_HEADER}"
                        " header (set ANTHROPIC_CUSTOM_HEADERS for Claude Code)",
                    ),
                )
                return NOT_DONE_YET
        if isHealth:
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
