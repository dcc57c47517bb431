# -*- test-case-name: tests.test_dialects -*-
"""
What an attempt sends, in the upstream's own dialect: Anthropic's request
as it came (cleaned of what an Anthropic-compatible third party rejects,
or of translated thinking before it reaches Anthropic itself), or the
request translated to OpenAI Chat Completions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.web.http_headers import Headers

from ccrouter.config import Upstream
from ccrouter.errors import ProxyError, badRequest
from ccrouter.headers import upstreamRequestHeaders
from ccrouter.routing import Attempt
from ccrouter.translate.profiles import Profile, applyCompat
from ccrouter.translate.request import ToolNames, translateRequest
from ccrouter.translate.response import FAKE_SIGNATURE_PREFIX, stripFakeThinking
from ccrouter.translate.tokens import estimateTokens

MESSAGES_PATH = b"/v1/messages"
COUNT_TOKENS_PATH = b"/v1/messages/count_tokens"
#: Headers only Anthropic's API understands; an OpenAI-format upstream
#: gets none of them.
_ANTHROPIC_HEADER_PREFIXES = (b"anthropic-", b"x-stainless-", b"x-claude-code")


@frozen
class Translation:
    """
    How to turn an OpenAI-format answer back into Anthropic's.

    @ivar model: The model name the client asked for (the answer names it).
    @ivar inputTokens: An estimate of the prompt's tokens, for
        C{message_start} before the upstream reports usage.
    """

    model: str
    toolNames: ToolNames
    profile: Profile
    streaming: bool
    inputTokens: int


@frozen
class Outbound:
    """
    The request an attempt sends.

    @ivar translation: Set when the answer must be translated back.
    """

    url: bytes
    headers: Headers
    body: bytes
    translation: Translation | None = None


@frozen
class LocalAnswer:
    """
    A request ccrouter answers itself (a token count an upstream cannot
    make).
    """

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]


def prepare(
    attempt: Attempt,
    method: bytes,
    target: bytes,
    clientHeaders: Headers,
    clientModel: str | None = None,
    countsTokens: bool = True,
) -> Outbound | LocalAnswer | ProxyError:
    """
    The request for C{attempt}, answered locally, or refused.

    @param target: The client's raw request target (path and query).
    @param clientModel: The model the client asked for, which a translated
        answer names (a rewrite stays invisible to the client).
    @param countsTokens: Whether the upstream answers C{count_tokens} (an
        Anthropic-compatible one that answered 404 does not).
    """
    try:
        return _prepare(
            attempt, method, target, clientHeaders, clientModel, countsTokens
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        # A body the translators cannot follow is the request's own fault.
        return badRequest(f"the request cannot be sent on: {type(e).__name__}")


def _prepare(
    attempt: Attempt,
    method: bytes,
    target: bytes,
    clientHeaders: Headers,
    clientModel: str | None,
    countsTokens: bool,
) -> Outbound | LocalAnswer | ProxyError:
    upstream = attempt.upstream
    path = target.split(b"?", 1)[0]
    if not countsTokens and path == COUNT_TOKENS_PATH:
        try:
            document = json.loads(attempt.body)
        except ValueError:
            return badRequest("the request body is not JSON")
        if isinstance(document, dict):
            return countTokensLocally(document, upstream.name)
    if upstream.format == "openai" and attempt.upstreamModel is not None:
        return _openAI(attempt, path, clientHeaders, clientModel)
    headers = upstreamRequestHeaders(clientHeaders, upstream)
    body = attempt.body
    if upstream.compat is not None and attempt.upstreamModel is not None:
        return _compat(upstream, target, headers, body)
    if FAKE_SIGNATURE_PREFIX.encode("ascii") in body and method == b"POST":
        # Thinking translated from another provider carries a signature
        # Anthropic would reject: it goes before the conversation does.
        body = _rewritten(body, stripFakeThinking)
    return Outbound(upstream.urlFor(target), headers, body)


def _serialise(document: Any) -> bytes:
    """
    JSON with every non-ASCII character escaped: a lone surrogate (a tool
    output cut inside an emoji) stays a valid escape instead of failing to
    encode.
    """
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def _rewritten(
    body: bytes, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> bytes:
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict):
        return body
    return _serialise(change(document))


def _compat(
    upstream: Upstream, target: bytes, headers: Headers, body: bytes
) -> Outbound:
    compat = upstream.compat
    assert compat is not None
    betas = [
        beta.strip()
        for value in headers.getRawHeaders(b"anthropic-beta", [])
        for beta in value.decode("latin-1").split(",")
        if beta.strip()
    ]
    cleanedBetas: list[str] = betas
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        cleaned, cleanedBetas = applyCompat(document, betas, compat)
        if cleaned != document:
            body = _serialise(cleaned)
    if cleanedBetas != betas:
        if cleanedBetas:
            headers.setRawHeaders(
                b"anthropic-beta", [",".join(cleanedBetas).encode("latin-1")]
            )
        else:
            headers.removeHeader(b"anthropic-beta")
    for name in compat.dropHeaders:
        headers.removeHeader(name.encode("latin-1"))
    for name, value in compat.setHeaders:
        headers.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
    return Outbound(upstream.urlFor(target), headers, body)


def _openAI(
    attempt: Attempt, path: bytes, clientHeaders: Headers, clientModel: str | None
) -> Outbound | LocalAnswer | ProxyError:
    upstream = attempt.upstream
    profile = upstream.profile
    assert profile is not None and attempt.upstreamModel is not None
    try:
        document = json.loads(attempt.body)
    except ValueError:
        return badRequest("the request body is not JSON")
    if not isinstance(document, dict):
        return badRequest("the request body is not a JSON object")
    if path == COUNT_TOKENS_PATH:
        return countTokensLocally(document, upstream.name)
    if path != MESSAGES_PATH:
        return ProxyError(
            404,
            "not_found_error",
            f"upstream {upstream.name} speaks OpenAI Chat Completions, which has"
            f" no equivalent of {path.decode('ascii', 'replace')}",
        )
    translated = translateRequest(document, attempt.upstreamModel, profile)
    headers = upstreamRequestHeaders(clientHeaders, upstream)
    for name, _ in list(headers.getAllRawHeaders()):
        if name.lower().startswith(_ANTHROPIC_HEADER_PREFIXES):
            headers.removeHeader(name)
    headers.setRawHeaders(b"content-type", [b"application/json"])
    headers.setRawHeaders(
        b"accept",
        [b"text/event-stream" if translated.streaming else b"application/json"],
    )
    url = (upstream.origin + upstream.basePath + "/chat/completions").encode("ascii")
    body = _serialise(translated.body)
    translation = Translation(
        model=clientModel or attempt.upstreamModel,
        toolNames=translated.toolNames,
        profile=profile,
        streaming=translated.streaming,
        inputTokens=estimateTokens(document),
    )
    return Outbound(url, headers, body, translation)


def countTokensLocally(document: dict[str, Any], upstreamName: str) -> LocalAnswer:
    """
    Anthropic's C{count_tokens} answer, estimated here for an upstream that
    cannot count; a header says so.
    """
    body = json.dumps({"input_tokens": estimateTokens(document)}).encode("utf-8")
    return LocalAnswer(
        200,
        body,
        (
            (b"content-type", b"application/json"),
            (b"x-ccrouter-token-count", b"estimate"),
            (b"x-ccrouter-upstream", upstreamName.encode("utf-8", "replace")),
        ),
    )
