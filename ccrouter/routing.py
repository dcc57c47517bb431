# -*- test-case-name: tests.test_routing -*-
"""
Deciding where a request goes: model name patterns, route selection and the
plan of attempts for one request.  Pure: no I/O, no reactor.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from attrs import evolve, frozen

from ccrouter.body import parseRequestBody

if TYPE_CHECKING:
    from ccrouter.body import RequestBody
    from ccrouter.config import Config, Mode, Route, Target, Upstream

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
    @ivar target: The failover target (or the mode) it serves, whose
        breaker hears how it went; L{None} for requests that are not routed.
    """

    upstream: Upstream
    body: bytes
    upstreamModel: str | None
    route: Route | None
    target: str | None = None


@frozen
class Plan:
    """
    Everything decided about a request before it is forwarded.

    @ivar clientModel: The model the client asked for, if the body has one.
    @ivar streaming: Whether the body asks for an SSE response.
    @ivar attempts: Ways to serve it, in order of preference: one, or one
        per target of a failover mode.
    @ivar mode: The mode it was planned in.
    @ivar failover: Whether the mode fails over between targets.
    """

    clientModel: str | None
    streaming: bool
    attempts: tuple[Attempt, ...]
    mode: str
    failover: bool = False


def findRoute(routes: tuple[Route, ...], model: str) -> Route | None:
    """
    The first route, top to bottom, whose pattern matches C{model}.
    """
    for route in routes:
        if route.pattern.matches(model):
            return route
    return None


def planRequest(
    config: Config,
    method: bytes,
    path: bytes,
    body: bytes,
    modeName: str | None = None,
) -> Plan:
    """
    Decide how to serve a request in a mode (the config's default mode when
    L{None} or unknown).

    Only C{POST} to a L{ROUTED_PATHS} path with a JSON object body naming a
    string C{model} is routed; everything else goes to the default upstream
    exactly as it came, whatever the mode.
    """
    mode = _modeNamed(config, modeName)
    passthrough = Attempt(
        upstream=config.default, body=body, upstreamModel=None, route=None
    )
    if method != b"POST" or path not in ROUTED_PATHS:
        return Plan(None, False, (passthrough,), mode.name)
    parsed = parseRequestBody(body)
    if parsed is None or parsed.model is None:
        streaming = parsed is not None and parsed.streaming
        return Plan(None, streaming, (passthrough,), mode.name)
    if mode.failover:
        attempts = _distinct(
            [
                (_attempt(config, target.routes, parsed, body, target.name), target)
                for target in mode.failover
            ]
        )
        return Plan(parsed.model, parsed.streaming, attempts, mode.name, True)
    attempt = _attempt(config, mode.routes, parsed, body, mode.name)
    if not _owned(attempt, mode.routes):
        attempt = evolve(attempt, target=None)
    return Plan(parsed.model, parsed.streaming, (attempt,), mode.name)


def _distinct(candidates: list[tuple[Attempt, Target]]) -> tuple[Attempt, ...]:
    """
    One attempt per distinct request.  A target mode with no route for the
    model sends it to the default upstream unchanged, just as a target
    with no routes at all does: the same request, which is sent once and
    counted against the target that really serves it (the one whose route
    matched, or the one without routes), never against a provider that was
    not asked.
    """
    kept: list[tuple[Attempt, bool]] = []
    for attempt, target in candidates:
        owned = _owned(attempt, target.routes)
        twin = next(
            (
                index
                for index, (earlier, _) in enumerate(kept)
                if earlier.upstream == attempt.upstream and earlier.body == attempt.body
            ),
            None,
        )
        if twin is None:
            kept.append((attempt, owned))
        elif owned and not kept[twin][1]:
            kept[twin] = (attempt, owned)
    # A request no target serves (every one would merely pass it on to the
    # default upstream) counts against none of them.
    return tuple(
        attempt if owned else evolve(attempt, target=None) for attempt, owned in kept
    )


def _owned(attempt: Attempt, routes: tuple[Route, ...]) -> bool:
    """
    Whether the target or mode with C{routes} really serves C{attempt}: one
    of its routes matched, or it has none and passes everything on.
    """
    return attempt.route is not None or not routes


def _modeNamed(config: Config, name: str | None) -> Mode:
    mode = None if name is None else config.mode(name)
    if mode is None:
        mode = config.mode(config.defaultMode)
    assert mode is not None, "a parsed config always has its default mode"
    return mode


def _attempt(
    config: Config,
    routes: tuple[Route, ...],
    parsed: RequestBody,
    body: bytes,
    target: str,
) -> Attempt:
    model = parsed.model
    assert model is not None
    route = findRoute(routes, model)
    if route is None:
        return Attempt(config.default, body, model, None, target)
    if route.model is None or route.model == model:
        return Attempt(route.upstream, body, model, route, target)
    return Attempt(
        route.upstream, parsed.withModel(route.model), route.model, route, target
    )
