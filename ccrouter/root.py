# -*- test-case-name: tests.test_proxy -*-
"""
The root of the resource tree: every request is checked here first, then
ccrouter's own pages (C{/health}, C{/status}, C{/status/data},
C{/metrics}) are answered here and everything else is proxied.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from ccrouter.guard import (
    HEALTH_PATH,
    METRICS_PATH,
    STATUS_DATA_PATH,
    STATUS_PATH,
    checkRequest,
)
from ccrouter.health import HealthResource, StatusDataResource
from ccrouter.live import LiveState
from ccrouter.proxy import AgentFor, ProxyResource, writeError
from ccrouter.statuspage import StatusPageResource


class RootResource(Resource):
    """
    A leaf that dispatches on the exact raw path: Twisted's segment
    decoding would let C{/%68ealth} or C{//health} mean something else
    here than upstream.
    """

    isLeaf = True

    def __init__(
        self, live: LiveState, proxy: IResource, local: Mapping[bytes, IResource]
    ) -> None:
        """
        @param local: ccrouter's own pages, by exact path.
        """
        super().__init__()
        self._live = live
        self._proxy = proxy
        self._local = local

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
        # Past the guard, the request log (for proxied requests) says more
        # than an access line, and ccrouter's own pages are polled.
        request.accessLogged = False  # type: ignore[attr-defined]
        path = request.uri.split(b"?", 1)[0]
        if path == METRICS_PATH:
            # On this thread, for the scrape that follows on another.
            self._live.stats.refreshLive()
        local = self._local.get(path)
        if local is not None:
            return local.render(request)  # type: ignore[no-any-return]
        return self._proxy.render(request)  # type: ignore[no-any-return]


def resourceTree(
    live: LiveState, agentFor: AgentFor, clock: IReactorTime
) -> RootResource:
    """
    Everything ccrouter serves, over one live state.
    """
    # Imported here: it imports the global reactor, which twistd must be
    # free to choose first.
    from prometheus_client.twisted import MetricsResource

    return RootResource(
        live,
        proxy=ProxyResource(live, agentFor, clock),
        local={
            HEALTH_PATH: HealthResource(live),
            STATUS_PATH: StatusPageResource(),
            STATUS_DATA_PATH: StatusDataResource(live),
            # prometheus_client's own resource: it renders in the reactor's
            # thread pool and negotiates the exposition format and gzip.
            METRICS_PATH: MetricsResource(live.stats.registry),
        },
    )
