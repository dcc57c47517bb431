# -*- test-case-name: tests.test_translate_response -*-
"""
OpenAI Chat Completions responses and errors as Anthropic ones
(C{shared/reference/protocol.md} sections 7.3 to 7.8), and the clean-up of
translated history before it goes to a real Anthropic upstream.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from ccrouter.errors import ProxyError, isAnthropicError
from ccrouter.translate.profiles import Profile
from ccrouter.translate.request import ToolNames

#: Every thinking signature made up by translation starts with this, so that
#: L{stripFakeThinking} can find them again (7.6, pitfall P8).
FAKE_SIGNATURE_PREFIX = "ccrouter-translated:"

#: What Anthropic (and so Claude Code, which replays them) accepts as a
#: C{tool_use} id [ISS-TOOLID].
_VALID_TOOL_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_INVALID_TOOL_ID_CHARACTER = re.compile(r"[^A-Za-z0-9_-]")

#: The input given to a tool whose arguments were not a JSON object: a key
#: no schema has, so the tool's validation fails and the model sees why,
#: instead of a wrong but valid call running (7.3).
UNPARSED_ARGUMENTS_KEY = "ccrouter_unparsed_arguments"

#: Reasoning embedded in the content by some providers (6.5).
_THINK_TAGS = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


def _digest(seed: str, length: int = 24) -> str:
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:length]


def fakeSignature(thinking: str) -> str:
    """
    The signature of a C{thinking} block made from an upstream's reasoning:
    never empty (Claude Code requires one, 7.3 [ISS-SIG-MISSING]) and
    recognisable by L{isFakeSignature}.
    """
    return FAKE_SIGNATURE_PREFIX + _digest(thinking, 32)


def isFakeSignature(signature: object) -> bool:
    """
    Whether C{signature} was made up by translation.
    """
    return isinstance(signature, str) and signature.startswith(FAKE_SIGNATURE_PREFIX)


def messageId(seed: str) -> str:
    """
    An Anthropic message id derived from C{seed} (the upstream's
    completion id): the same completion always gets the same id.
    """
    return "msg_" + _digest(seed)


def toolUseId(callId: object, seed: str) -> str:
    """
    An Anthropic C{tool_use} id for the upstream's tool call id C{callId}:
    itself when valid, with invalid characters replaced when not (Kimi's
    C{functions.Bash:0}), or C{toolu_} and a digest of C{seed} when missing
    (pitfall P13).
    """
    if isinstance(callId, str) and callId:
        if _VALID_TOOL_ID.match(callId):
            return callId
        return _INVALID_TOOL_ID_CHARACTER.sub("_", callId)
    return "toolu_" + _digest(seed)


def stopReason(finishReason: object, hasToolUse: bool) -> str:
    """
    Anthropic's C{stop_reason} for an OpenAI C{finish_reason} (7.4): any
    turn that made tool calls is C{tool_use} whatever the upstream says
    (Gemini ends them with C{stop}, P6); C{length} is C{max_tokens};
    C{content_filter} is C{refusal} (not C{stop_sequence}, P22); anything
    else ends the turn.
    """
    if hasToolUse:
        return "tool_use"
    if finishReason == "length":
        return "max_tokens"
    if finishReason == "content_filter":
        return "refusal"
    return "end_turn"


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return max(int(value), 0)


def anthropicUsage(usage: object) -> dict[str, int]:
    """
    Anthropic C{usage} for an OpenAI C{usage} object (7.5, pitfall P10):
    cached prompt tokens (C{prompt_tokens_details.cached_tokens}, or
    DeepSeek's C{prompt_cache_hit_tokens}) are taken out of C{input_tokens}
    and reported as C{cache_read_input_tokens}, as Anthropic's three input
    counts are disjoint.
    """
    if not isinstance(usage, Mapping):
        usage = {}
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, Mapping):
        details = {}
    cacheRead = _count(details.get("cached_tokens")) or _count(
        usage.get("prompt_cache_hit_tokens")
    )
    cacheWrite = _count(details.get("cache_write_tokens"))
    prompt = _count(usage.get("prompt_tokens"))
    return {
        "input_tokens": max(prompt - cacheRead - cacheWrite, 0),
        "output_tokens": _count(usage.get("completion_tokens")),
        "cache_read_input_tokens": cacheRead,
        "cache_creation_input_tokens": cacheWrite,
    }


def parseArguments(arguments: object) -> dict[str, Any]:
    """
    A tool call's C{input} from its C{arguments}: a JSON object string (or an
    object, which some servers send); empty means C{{}}.  Anything else is
    kept whole under L{UNPARSED_ARGUMENTS_KEY} so that the call fails
    visibly rather than running with invented input (P4, P5).
    """
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {UNPARSED_ARGUMENTS_KEY: arguments}


def _text(content: object) -> str:
    """
    A message's C{content}: a string, or the text of its parts.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _reasoning(message: Mapping[str, Any], profile: Profile) -> str:
    for name in profile.reasoningFields:
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _choice(body: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = body.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                return choice
    return {}


def _stopSequence(choice: Mapping[str, Any]) -> str | None:
    """
    The stop sequence that ended the turn, for servers that say which
    (vLLM's C{stop_reason}, SGLang's C{matched_stop}); OpenAI itself cannot
    tell a stop sequence from a natural end (7.4).
    """
    if choice.get("finish_reason") != "stop":
        return None
    for name in ("stop_reason", "matched_stop"):
        value = choice.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def translateResponse(
    body: Mapping[str, Any], model: str, toolNames: ToolNames, profile: Profile
) -> dict[str, Any]:
    """
    A non-streaming C{chat.completion} as an Anthropic C{message} (7.3).

    Content comes in Anthropic's order: thinking (signed with
    L{fakeSignature}), text, then one C{tool_use} per call under its
    original name.  No block is ever empty (P18).

    @param body: The upstream's response body (parsed JSON).
    @param model: The model name the client asked for.
    @param toolNames: The request's tool name map.
    @param profile: The upstream's quirks.
    """
    upstreamId = body.get("id")
    seed = (
        upstreamId
        if isinstance(upstreamId, str) and upstreamId
        else json.dumps(body, sort_keys=True, default=str)
    )
    choice = _choice(body)
    message = choice.get("message")
    if not isinstance(message, Mapping):
        message = {}
    thinking = _reasoning(message, profile)
    text = _text(message.get("content"))
    if not thinking:
        tagged = _THINK_TAGS.match(text)
        if tagged:
            thinking, text = tagged.group(1).strip(), text[tagged.end() :]
    content: list[dict[str, Any]] = []
    if thinking:
        content.append(
            {
                "type": "thinking",
                "thinking": thinking,
                "signature": fakeSignature(thinking),
            }
        )
    refusal = message.get("refusal")
    if not text and isinstance(refusal, str) and refusal:
        text = refusal
    if text:
        content.append({"type": "text", "text": text})
    content.extend(_toolUses(message.get("tool_calls"), seed, toolNames))
    hasToolUse = any(block["type"] == "tool_use" for block in content)
    reason = stopReason(choice.get("finish_reason"), hasToolUse)
    if reason == "end_turn" and isinstance(refusal, str) and refusal:
        reason = "refusal"
    stopSequence = _stopSequence(choice) if reason == "end_turn" else None
    return {
        "id": messageId(seed),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "stop_sequence" if stopSequence else reason,
        "stop_sequence": stopSequence,
        "usage": anthropicUsage(body.get("usage")),
    }


def _toolUses(calls: object, seed: str, toolNames: ToolNames) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for position, call in enumerate(calls if isinstance(calls, list) else []):
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        if not isinstance(function, Mapping):
            continue
        blocks.append(
            {
                "type": "tool_use",
                "id": toolUseId(call.get("id"), f"{seed}:{position}"),
                "name": toolNames.toOriginal(str(function.get("name", ""))),
                "input": parseArguments(function.get("arguments")),
            }
        )
    return blocks


# Errors ---------------------------------------------------------------------

#: Upstream status to Anthropic status and error type (7.8): LiteLLM's map
#: plus the recommendations (422 is a bad request, 408 and 504 time outs,
#: 503 an overload, which Claude Code shows and retries as one).
_ERROR_FOR_STATUS = {
    400: (400, "invalid_request_error"),
    401: (401, "authentication_error"),
    402: (402, "billing_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    408: (504, "timeout_error"),
    413: (413, "request_too_large"),
    422: (400, "invalid_request_error"),
    429: (429, "rate_limit_error"),
    500: (500, "api_error"),
    503: (529, "overloaded_error"),
    504: (504, "timeout_error"),
    529: (529, "overloaded_error"),
}

#: Error type words some upstreams use, for errors that come without a
#: usable status (inside a 200 stream).
_STATUS_FOR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "overloaded_error": 529,
    "server_error": 500,
    "api_error": 500,
}

_CONTEXT_WORDS = re.compile(
    r"context[ _-]?(length|window)|maximum context|too many tokens|"
    r"prompt is too long|input is too long|model token limit|"
    r"exceeds? the (model's )?max(imum)? (input|context|number of tokens)",
    re.IGNORECASE,
)
_NUMBER = r"(\d[\d,]*)"
_LIMIT_PATTERNS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        rf"maximum context length (?:is |of )?{_NUMBER}",
        rf"{_NUMBER} (?:tokens )?maximum",
        rf"context (?:length|window|size)(?: limit)?(?: is| of)?:? {_NUMBER}",
        rf"token limit(?: is| of)?:? {_NUMBER}",
    )
)
_REQUESTED_PATTERNS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        rf"prompt is too long: {_NUMBER}",
        rf"resulted in {_NUMBER} tokens",
        rf"requested:? {_NUMBER}",
        rf"(?:contains|has|with) {_NUMBER} (?:input |prompt )?tokens",
        rf"prompt (?:length|tokens?)(?: is| of)?:? {_NUMBER}",
    )
)


def _firstNumber(patterns: tuple[re.Pattern[str], ...], text: str) -> int | None:
    for pattern in patterns:
        found = pattern.search(text)
        if found:
            return int(found.group(1).replace(",", ""))
    return None


def promptTooLong(message: str) -> str:
    """
    Claude Code's context-overflow wording (4.2 [ISS-PTL]) for an upstream's
    context-length C{message}: C{prompt is too long: N tokens > M maximum}
    when both numbers can be read from it, followed by the original in
    parentheses; else C{prompt is too long: } and the original.
    """
    if message.lower().startswith("prompt is too long:"):
        return message
    requested = _firstNumber(_REQUESTED_PATTERNS, message)
    limit = _firstNumber(_LIMIT_PATTERNS, message)
    if requested is not None and limit is not None and requested > limit:
        return f"prompt is too long: {requested} tokens > {limit} maximum ({message})"
    return f"prompt is too long: {message}"


def _errorDetails(document: object) -> tuple[str, str, str]:
    """
    The message, code and type of an upstream error document, whatever its
    dialect: OpenAI's C{{"error": {...}}}, a bare C{{"error": "..."}}
    (Ollama), C{{"message": ...}} (vLLM), C{{"detail": ...}} (FastAPI), a
    one-element list (Gemini).  OpenRouter's provider error in
    C{error.metadata.raw} is appended to the message.
    """
    if isinstance(document, list) and document:
        document = document[0]
    if not isinstance(document, Mapping):
        return "", "", ""
    detail: object = document.get("error", document)
    if isinstance(detail, str):
        return detail, "", ""
    if not isinstance(detail, Mapping):
        return "", "", ""
    message = detail.get("message", detail.get("detail", ""))
    message = message if isinstance(message, str) else json.dumps(message)
    metadata = detail.get("metadata")
    raw = metadata.get("raw") if isinstance(metadata, Mapping) else None
    if isinstance(raw, str) and raw and raw not in message:
        message = f"{message}: {raw}" if message else raw
    code = detail.get("code")
    kind = detail.get("type")
    return (
        message,
        "" if code is None else str(code),
        kind if isinstance(kind, str) else "",
    )


def _isContextLength(status: int, message: str, code: str) -> bool:
    if code == "context_length_exceeded":
        return True
    return status in (400, 413, 422) and bool(_CONTEXT_WORDS.search(message))


def errorFromPayload(
    status: int, document: object, retryAfter: str | None = None
) -> ProxyError:
    """
    The Anthropic error for an upstream error document (parsed JSON, or
    C{None} when the body was not JSON).  C{status} is the upstream's HTTP
    status; for an error chunk inside a 200 stream the status comes from the
    document's numeric C{code} or its type, else 500.
    """
    message, code, kind = _errorDetails(document)
    if status < 300:
        numeric = int(code) if code.isascii() and code.isdigit() else 0
        status = numeric if 400 <= numeric < 600 else _STATUS_FOR_TYPE.get(kind, 500)
    if not message:
        message = f"upstream answered HTTP {status}"
    if _isContextLength(status, message, code):
        return ProxyError(400, "invalid_request_error", promptTooLong(message))
    fallback = "api_error" if status >= 500 or status < 400 else "invalid_request_error"
    mapped, errorType = _ERROR_FOR_STATUS.get(
        status, (status if status >= 400 else 502, fallback)
    )
    if retryAfter and mapped in (429, 529):
        message = f"{message} (retry-after: {retryAfter})"
    return ProxyError(mapped, errorType, message)


def translateError(
    status: int, body: bytes, retryAfter: str | None
) -> tuple[int, bytes]:
    """
    An OpenAI-format upstream's error response as Anthropic's (7.8).

    A body already in Anthropic's shape passes unchanged.  Otherwise the
    status gets Anthropic's error type, the upstream's message is kept in
    the text, and context-length errors become C{400 invalid_request_error}
    with the C{prompt is too long} wording Claude Code compacts on.

    @param status: The upstream's HTTP status.
    @param body: The upstream's response body.
    @param retryAfter: The upstream's C{retry-after} header, if any (the
        caller passes the header on; it is also named in the message).
    @return: The status and body to send to the client.
    """
    if isAnthropicError(body):
        return status, body
    try:
        document: object = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()[:2000]
        document = {"error": {"message": text}} if text else None
    error = errorFromPayload(status, document, retryAfter)
    return error.status, error.body()


# Going back to Anthropic ----------------------------------------------------


def _isFakeThinking(block: object) -> bool:
    return (
        isinstance(block, Mapping)
        and block.get("type") == "thinking"
        and isFakeSignature(block.get("signature"))
    )


def _inToolLoop(messages: list[Any]) -> bool:
    """
    Whether the conversation ends inside a tool-use loop: its last message
    is a user turn of tool results answering the assistant turn before it.
    """
    if len(messages) < 2 or not isinstance(messages[-1], Mapping):
        return False
    content = messages[-1].get("content")
    return (
        messages[-1].get("role") == "user"
        and isinstance(content, list)
        and any(
            isinstance(block, Mapping) and block.get("type") == "tool_result"
            for block in content
        )
    )


def stripFakeThinking(body: Mapping[str, Any]) -> dict[str, Any]:
    """
    A copy of an Anthropic request without the thinking blocks translation
    made up, which a real Anthropic upstream rejects with C{Invalid
    signature in thinking block} (7.6, pitfall P8).

    An assistant turn left empty is dropped.  When the turn that lost its
    thinking is the one the current tool-use loop continues, Anthropic would
    insist that it start with a thinking block, so thinking is switched off
    for this request (and C{clear_thinking} context edits with it), as the
    API's own error message advises.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        return dict(body)
    kept: list[Any] = []
    strippedLast = False
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list) or not any(map(_isFakeThinking, content)):
            kept.append(message)
            continue
        remaining = [block for block in content if not _isFakeThinking(block)]
        strippedLast = strippedLast or index == len(messages) - 2
        if remaining:
            kept.append({**message, "content": remaining})
    cleaned = {**body, "messages": kept}
    if strippedLast and _inToolLoop(messages):
        cleaned = _withoutThinking(cleaned)
    return cleaned


def _withoutThinking(body: dict[str, Any]) -> dict[str, Any]:
    body.pop("thinking", None)
    management = body.get("context_management")
    if isinstance(management, Mapping) and isinstance(management.get("edits"), list):
        edits = [
            edit
            for edit in management["edits"]
            if not (
                isinstance(edit, Mapping)
                and str(edit.get("type", "")).startswith("clear_thinking")
            )
        ]
        body["context_management"] = {**management, "edits": edits}
    return body
