# -*- test-case-name: tests.test_routing -*-
"""
Deciding where a request goes: model name patterns, route selection and the
plan of attempts for one request.  Pure: no I/O, no reactor.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from attrs import frozen

from ccrouter.body import parseRequestBody

if TYPE_CHECKING:
    from ccrouter.config import Config, Route, Upstream

#: Paths whose JSON body carries the C{model} that routing decides on.  Any
#: query string (Claude Code always sends C{?beta=true}) is ignored here.
ROUTED_PATHS = frozenset({b"/v1/messages", b"/v1/messages/count_tokens"})

_GLOB_CHARACTERS = frozenset("*?[")


@frozen
class ModelPattern:
    """
    A route's C{match}: a glob when it contains C{*}, C{?} or C{[} (matched
    against the whole model name), otherwise a substring.
    """

    text: str
    isGlob: bool

    @classmethod
    def parse(cls, text: str) -> ModelPattern:
        return cls(text=text, isGlob=not _GLOB_CHARACTERS.isdisjoint(text))

    def matches(self, model: str) -> bool:
        if self.isGlob:
            return fnmatchcase(model, self.text)
        return self.text in model


@frozen
class Attempt:
    """
    One way of serving a request: where to send it and with which body.

    @ivar upstreamModel: The model name the upstream sees, if routing read
        one.
    @ivar route: The rule that chose this attempt, or L{None} for the
        default upstream.
    """

    upstream: Upstream
    body: bytes
    upstreamModel: str | None
    route: Route | None


@frozen
class Plan:
    """
    Everything decided about a request before it is forwarded.

    @ivar clientModel: The model the client asked for, if the body has one.
    @ivar streaming: Whether the body asks for an SSE response.
    @ivar attempts: Ways to serve it, in order of preference.
    """

    clientModel: str | None
    streaming: bool
    attempts: tuple[Attempt, ...]


def findRoute(routes: tuple[Route, ...], model: str) -> Route | None:
    """
    The first route, top to bottom, whose pattern matches C{model}.
    """
    for route in routes:
        if route.pattern.matches(model):
            return route
    return None


def planRequest(config: Config, method: bytes, path: bytes, body: bytes) -> Plan:
    """
    Decide how to serve a request.

    Only C{POST} to a L{ROUTED_PATHS} path with a JSON object body naming a
    string C{model} is routed; everything else goes to the default upstream
    exactly as it came.
    """
    passthrough = Attempt(
        upstream=config.default, body=body, upstreamModel=None, route=None
    )
    if method != b"POST" or path not in ROUTED_PATHS:
        return Plan(clientModel=None, streaming=False, attempts=(passthrough,))
    parsed = parseRequestBody(body)
    if parsed is None or parsed.model is None:
        streaming = parsed is not None and parsed.streaming
        return Plan(clientModel=None, streaming=streaming, attempts=(passthrough,))
    model = parsed.model
    route = findRoute(config.routes, model)
    if route is None:
        attempt = Attempt(
            upstream=config.default, body=body, upstreamModel=model, route=None
        )
    elif route.model is None or route.model == model:
        attempt = Attempt(
            upstream=route.upstream, body=body, upstreamModel=model, route=route
        )
    else:
        attempt = Attempt(
            upstream=route.upstream,
            body=parsed.withModel(route.model),
            upstreamModel=route.model,
            route=route,
        )
    return Plan(clientModel=model, streaming=parsed.streaming, attempts=(attempt,))
