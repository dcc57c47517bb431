# -*- test-case-name: tests.test_translate_request -*-
"""
An Anthropic Messages request as an OpenAI Chat Completions request
(C{shared/reference/protocol.md} sections 7.1 and 7.2).

The body is rebuilt from the fields it understands, so every Anthropic-only
field (C{metadata}, C{context_management}, C{cache_control},
C{output_config}, C{top_k}, C{service_tier}, ...) is left behind by
construction (pitfalls P19, P20).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from attrs import field, frozen

from ccrouter.translate.profiles import Profile

#: The tool names OpenAI-family validators accept [ISS-64].
_VALID_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_INVALID_TOOL_CHARACTER = re.compile(r"[^A-Za-z0-9_-]")

#: Claude Code's first system block, which api.anthropic.com strips by
#: position and which only costs tokens and cache hits elsewhere (5.4).
BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"

#: OpenAI takes at most four stop sequences (7.1).
MAX_STOP_SEQUENCES = 4

#: The content of a tool message for a call whose result never came (7.2
#: step 5): OpenAI rejects a C{tool_calls} message without one per call.
MISSING_RESULT = "Error: no result was recorded for this tool call."

#: A tool result's text is marked with this when C{is_error} is set (7.2).
ERROR_PREFIX = "Error: "


def shortenToolName(name: str, limit: int) -> str:
    """
    A name OpenAI-family upstreams accept for tool C{name}: C{name} itself
    when it is short enough and uses only C{[A-Za-z0-9_-]}, else its first
    characters (invalid ones replaced by C{_}), C{_} and eight hex digits of
    its SHA-256, C{limit} characters at most (pitfall P12).  Deterministic,
    so the same name is shortened alike in C{tools}, in the history and in
    C{tool_choice}.
    """
    if len(name) <= limit and _VALID_TOOL_NAME.match(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    prefix = _INVALID_TOOL_CHARACTER.sub("_", name)[: limit - len(digest) - 1]
    return f"{prefix}_{digest}"


@frozen
class ToolNames:
    """
    The reversible map between the tool names of a request and the names its
    upstream sees.

    @ivar limit: The upstream's longest tool name.
    """

    limit: int = 64
    _toUpstream: Mapping[str, str] = field(factory=dict, alias="toUpstream")
    _toOriginal: Mapping[str, str] = field(factory=dict, alias="toOriginal")

    @classmethod
    def fromNames(cls, names: Iterable[str], limit: int = 64) -> ToolNames:
        """
        The map for tools called C{names}, shortening each with
        L{shortenToolName}.
        """
        toUpstream = {name: shortenToolName(name, limit) for name in names}
        toOriginal = {
            short: name for name, short in toUpstream.items() if short != name
        }
        return cls(limit, toUpstream, toOriginal)

    def toUpstream(self, name: str) -> str:
        """
        The name the upstream knows tool C{name} by.
        """
        found = self._toUpstream.get(name)
        return found if found is not None else shortenToolName(name, self.limit)

    def toOriginal(self, name: str) -> str:
        """
        The client's name for the tool the upstream calls C{name}; a name
        that was never shortened maps to itself.
        """
        return self._toOriginal.get(name, name)

    @property
    def shortened(self) -> Mapping[str, str]:
        """
        Shortened name to original name, for every name that was shortened.
        """
        return dict(self._toOriginal)


@frozen
class TranslatedRequest:
    """
    A Chat Completions request made from an Anthropic Messages request.

    @ivar body: The JSON body to send upstream.
    @ivar toolNames: How tool names were shortened, for the response.
    @ivar streaming: Whether the client asked for an SSE stream.
    @ivar notes: What was dropped or approximated, in words, for the log.
    """

    body: dict[str, Any]
    toolNames: ToolNames
    streaming: bool
    notes: tuple[str, ...] = ()


def translateRequest(
    body: Mapping[str, Any], model: str, profile: Profile
) -> TranslatedRequest:
    """
    Translate an Anthropic Messages request for an OpenAI-format upstream.

    @param body: The client's request body (already parsed JSON).
    @param model: The upstream's model name.
    @param profile: The upstream's quirks.
    """
    notes: list[str] = []
    toolNames = ToolNames.fromNames(_toolNamesIn(body), profile.toolNameLimit)
    streaming = body.get("stream") is True
    out: dict[str, Any] = {"model": model}
    out["messages"] = _system(body.get("system")) + _messages(
        body.get("messages"), toolNames, profile, notes
    )
    out.update(_maxTokens(body, profile, notes))
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    out.update(_stop(body.get("stop_sequences"), notes))
    out.update(_tools(body, toolNames, notes))
    out.update(_reasoning(body, profile, out.get(_maxTokensKey(profile))))
    out.update(_responseFormat(body))
    if streaming:
        out["stream"] = True
        if profile.streamUsage:
            out["stream_options"] = {"include_usage": True}
    return TranslatedRequest(out, toolNames, streaming, tuple(notes))


# Tool names ----------------------------------------------------------------


def _blocks(content: Any) -> list[Mapping[str, Any]]:
    """
    The content blocks of a message's C{content} (a string is one text
    block; anything that is not a block is skipped).
    """
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [block for block in content if isinstance(block, Mapping)]
    return []


def _toolNamesIn(body: Mapping[str, Any]) -> Iterator[str]:
    """
    Every tool name in C{tools} and in the history's C{tool_use} blocks.
    """
    for tool in _list(body.get("tools")):
        if isinstance(tool, Mapping) and isinstance(tool.get("name"), str):
            yield tool["name"]
    for message in _list(body.get("messages")):
        if isinstance(message, Mapping):
            for block in _blocks(message.get("content")):
                if block.get("type") == "tool_use" and isinstance(
                    block.get("name"), str
                ):
                    yield block["name"]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# System ---------------------------------------------------------------------


def _systemText(system: Any) -> str:
    """
    The text of C{system} (a string or text blocks), with Claude Code's
    billing header block left out and blocks joined by blank lines.
    """
    if isinstance(system, str):
        return system
    texts = [
        block["text"]
        for block in _blocks(system)
        if block.get("type", "text") == "text" and isinstance(block.get("text"), str)
    ]
    if texts and texts[0].startswith(BILLING_HEADER_PREFIX):
        texts = texts[1:]
    return "\n\n".join(text for text in texts if text)


def _system(system: Any) -> list[dict[str, Any]]:
    text = _systemText(system)
    return [{"role": "system", "content": text}] if text else []


# Messages -------------------------------------------------------------------


def _messages(
    messages: Any, toolNames: ToolNames, profile: Profile, notes: list[str]
) -> list[dict[str, Any]]:
    """
    Convert the conversation (7.2).  Tool results become C{tool} messages
    right after the assistant message that made the calls; a call with no
    result gets a placeholder result, and a result with no call becomes
    user text, because OpenAI rejects both.
    """
    out: list[dict[str, Any]] = []
    pending: list[str] = []
    for message in _list(messages):
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        content = message.get("content")
        if role == "assistant":
            out.extend(_missingResults(pending))
            converted = _assistantMessage(content, toolNames, profile)
            pending = _callIds(converted)
            if converted is not None:
                out.append(converted)
        elif role == "user":
            out.extend(_userMessages(content, pending, profile, notes))
            pending = []
        elif role == "system":
            out.extend(_missingResults(pending))
            pending = []
            out.extend(_system(content))
    out.extend(_missingResults(pending))
    return out


def _callIds(message: Mapping[str, Any] | None) -> list[str]:
    if message is None:
        return []
    return [call["id"] for call in message.get("tool_calls", ())]


def _missingResults(ids: Iterable[str]) -> list[dict[str, Any]]:
    return [
        {"role": "tool", "tool_call_id": callId, "content": MISSING_RESULT}
        for callId in ids
    ]


def _assistantMessage(
    content: Any, toolNames: ToolNames, profile: Profile
) -> dict[str, Any] | None:
    """
    One assistant message: text blocks joined into C{content} (C{None}, never
    C{""}, when there is none), C{tool_use} blocks as C{tool_calls}, thinking
    as C{reasoning_content} when the profile replays it.  C{None} when
    nothing is left.
    """
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str) and block["text"]:
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thoughts.append(block["thinking"])
        elif kind == "tool_use":
            calls.append(_toolCall(block, toolNames))
    if not texts and not calls:
        return None
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "\n\n".join(texts) if texts else None,
    }
    if calls:
        message["tool_calls"] = calls
    if profile.replaysReasoning and any(thoughts):
        message["reasoning_content"] = "\n\n".join(t for t in thoughts if t)
    return message


def _toolCall(block: Mapping[str, Any], toolNames: ToolNames) -> dict[str, Any]:
    arguments = block.get("input")
    return {
        "id": str(block.get("id", "")),
        "type": "function",
        "function": {
            "name": toolNames.toUpstream(str(block.get("name", ""))),
            "arguments": json.dumps(
                arguments if isinstance(arguments, Mapping) else {},
                ensure_ascii=False,
            ),
        },
    }


def _userMessages(
    content: Any, pending: Sequence[str], profile: Profile, notes: list[str]
) -> list[dict[str, Any]]:
    """
    The messages for one user turn: first a C{tool} message per result (in
    order, one per call id), then placeholders for calls left unanswered,
    then one user message with the images of the results and the other
    blocks.
    """
    toolMessages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    resultImages: list[dict[str, Any]] = []
    answered: set[str] = set()
    for block in _blocks(content):
        if block.get("type") == "tool_result":
            callId = str(block.get("tool_use_id", ""))
            text, images = _toolResult(block, profile, notes)
            if callId in pending and callId not in answered:
                answered.add(callId)
                toolMessages.append(
                    {"role": "tool", "tool_call_id": callId, "content": text}
                )
                resultImages.extend(images)
            else:
                parts.append(_textPart(f"Result of tool call {callId}: {text}"))
                parts.extend(images)
        else:
            parts.extend(_userParts(block, profile, notes))
    toolMessages.extend(_missingResults(i for i in pending if i not in answered))
    user = _userMessage(resultImages + parts)
    return toolMessages + ([user] if user is not None else [])


def _userMessage(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """
    A user message of C{parts}: a plain string when they are all text (some
    servers take only strings), else the parts.
    """
    if not parts:
        return None
    if all(part["type"] == "text" for part in parts):
        return {
            "role": "user",
            "content": "\n\n".join(part["text"] for part in parts),
        }
    return {"role": "user", "content": parts}


def _textPart(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _toolResult(
    block: Mapping[str, Any], profile: Profile, notes: list[str]
) -> tuple[str, list[dict[str, Any]]]:
    """
    The text of a C{tool_result} (prefixed with C{Error: } when C{is_error}
    is set) and its images, which OpenAI tool messages cannot hold.
    """
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    else:
        for part in _blocks(content):
            for converted in _userParts(part, profile, notes):
                if converted["type"] == "text":
                    texts.append(converted["text"])
                else:
                    images.append(converted)
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = ERROR_PREFIX + text
    return text, images


def _userParts(
    block: Mapping[str, Any], profile: Profile, notes: list[str]
) -> list[dict[str, Any]]:
    """
    The Chat Completions content parts for one Anthropic block of a user
    turn (or of a tool result).  Empty text is skipped (P18); block types
    with no equivalent are dropped.
    """
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return [_textPart(text)] if isinstance(text, str) and text else []
    if kind == "image":
        url = _imageUrl(block.get("source"))
        return [{"type": "image_url", "image_url": {"url": url}}] if url else []
    if kind == "document":
        return _documentParts(block, profile, notes)
    if kind == "search_result":
        texts = [
            part["text"]
            for part in _blocks(block.get("content"))
            if isinstance(part.get("text"), str)
        ]
        title = block.get("title")
        header = [str(title)] if title else []
        return [_textPart("\n".join(header + texts))] if texts else []
    if kind == "tool_reference" and isinstance(block.get("tool_name"), str):
        return [_textPart(f"[tool reference: {block['tool_name']}]")]
    if kind is not None:
        notes.append(f"dropped a {kind} block")
    return []


def _imageUrl(source: Any) -> str | None:
    if not isinstance(source, Mapping):
        return None
    if source.get("type") == "base64":
        mediaType = source.get("media_type", "image/png")
        return f"data:{mediaType};base64,{source.get('data', '')}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    return None


def _documentParts(
    block: Mapping[str, Any], profile: Profile, notes: list[str]
) -> list[dict[str, Any]]:
    """
    A C{document} block: text documents as text, PDFs as C{file} parts for
    upstreams that read them and as a placeholder otherwise (7.2).
    """
    source = block.get("source")
    if not isinstance(source, Mapping):
        return []
    title = block.get("title")
    label = f"document {title!r}" if isinstance(title, str) and title else "document"
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        heading = f"{title}\n\n" if isinstance(title, str) and title else ""
        return [_textPart(heading + source["data"])] if source["data"] else []
    if kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [_textPart(inner)] if inner else []
        return [
            part for item in _blocks(inner) for part in _userParts(item, profile, notes)
        ]
    if kind == "base64" and profile.acceptsFiles:
        mediaType = source.get("media_type", "application/pdf")
        filePart: dict[str, Any] = {
            "file_data": f"data:{mediaType};base64,{source.get('data', '')}"
        }
        filePart["filename"] = (
            title if isinstance(title, str) and title else "document.pdf"
        )
        return [{"type": "file", "file": filePart}]
    where = f" at {source['url']}" if kind == "url" and "url" in source else ""
    notes.append(f"replaced a {kind} {label} with a placeholder")
    return [
        _textPart(
            f"[{label}{where} ({source.get('media_type', 'PDF')}) left out: "
            f"this model's API does not accept documents]"
        )
    ]


# Generation parameters ------------------------------------------------------


def _maxTokensKey(profile: Profile) -> str:
    return "max_completion_tokens" if profile.usesMaxCompletionTokens else "max_tokens"


def _maxTokens(
    body: Mapping[str, Any], profile: Profile, notes: list[str]
) -> dict[str, Any]:
    """
    C{max_tokens}, clamped to the profile's cap (P11) and to at least 1
    (Anthropic allows 0 to warm the cache; OpenAI does not).
    """
    value = body.get("max_tokens")
    if not isinstance(value, int) or isinstance(value, bool):
        return {}
    clamped = max(value, 1)
    if profile.maxTokensCap is not None and clamped > profile.maxTokensCap:
        notes.append(f"max_tokens {value} clamped to {profile.maxTokensCap}")
        clamped = profile.maxTokensCap
    return {_maxTokensKey(profile): clamped}


def _stop(stopSequences: Any, notes: list[str]) -> dict[str, Any]:
    stops = [s for s in _list(stopSequences) if isinstance(s, str) and s]
    if len(stops) > MAX_STOP_SEQUENCES:
        notes.append(f"kept the first {MAX_STOP_SEQUENCES} of {len(stops)} stops")
        stops = stops[:MAX_STOP_SEQUENCES]
    return {"stop": stops} if stops else {}


def _tools(
    body: Mapping[str, Any], toolNames: ToolNames, notes: list[str]
) -> dict[str, Any]:
    """
    C{tools}, C{tool_choice} and C{parallel_tool_calls} (7.1).  Only custom
    tools (those with an C{input_schema}) cross; server and client tools
    defined by Anthropic are dropped with a note.
    """
    tools: list[dict[str, Any]] = []
    for tool in _list(body.get("tools")):
        if not isinstance(tool, Mapping):
            continue
        schema = tool.get("input_schema")
        if tool.get("type", "custom") != "custom" or not isinstance(schema, Mapping):
            notes.append(
                f"dropped tool {tool.get('name')!r} of type {tool.get('type')!r}"
            )
            continue
        function: dict[str, Any] = {"name": toolNames.toUpstream(str(tool["name"]))}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        function["parameters"] = dict(schema)
        tools.append({"type": "function", "function": function})
    if not tools:
        return {}
    out: dict[str, Any] = {"tools": tools}
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        mapped = _toolChoice(choice, toolNames)
        if mapped is not None:
            out["tool_choice"] = mapped
        if choice.get("disable_parallel_tool_use") is True:
            out["parallel_tool_calls"] = False
    return out


def _toolChoice(choice: Mapping[str, Any], toolNames: ToolNames) -> Any:
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {
            "type": "function",
            "function": {"name": toolNames.toUpstream(choice["name"])},
        }
    return None


# Thinking -------------------------------------------------------------------

#: llms' buckets for budget_tokens (7.1).
_EFFORT_BUCKETS = ((1024, "low"), (8192, "medium"))

#: Anthropic effort levels the OpenAI family does not share.
_EFFORTS = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}


def effortForBudget(budget: int) -> str:
    """
    The C{reasoning_effort} for a thinking budget: up to 1024 tokens
    C{low}, up to 8192 C{medium}, above that C{high}.
    """
    for ceiling, effort in _EFFORT_BUCKETS:
        if budget <= ceiling:
            return effort
    return "high"


def _requestedEffort(body: Mapping[str, Any]) -> str:
    """
    The effort Claude Code asked for: from the thinking budget when there is
    one, else from C{output_config.effort}, else C{medium}.
    """
    thinking = body.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, Mapping) else None
    if isinstance(budget, int) and not isinstance(budget, bool):
        return effortForBudget(budget)
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, Mapping) else None
    return _EFFORTS.get(str(effort), "medium")


def _reasoning(
    body: Mapping[str, Any], profile: Profile, maxTokens: Any
) -> dict[str, Any]:
    """
    The upstream's reasoning parameter for C{thinking}.  Nothing at all when
    thinking is off, absent, or the profile has no parameter: DeepSeek
    rejects C{reasoning_effort} next to disabled thinking (P20).
    """
    thinking = body.get("thinking")
    if not isinstance(thinking, Mapping) or thinking.get("type") not in (
        "enabled",
        "adaptive",
    ):
        return {}
    if profile.reasoning == "reasoning_effort":
        return {"reasoning_effort": _requestedEffort(body)}
    if profile.reasoning == "openrouter":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool):
            if isinstance(maxTokens, int) and maxTokens > 1:
                budget = min(budget, maxTokens - 1)
            return {"reasoning": {"max_tokens": budget}}
        return {"reasoning": {"effort": _requestedEffort(body)}}
    return {}


def _responseFormat(body: Mapping[str, Any]) -> dict[str, Any]:
    """
    C{output_config.format} (structured output) as C{response_format}.
    """
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, Mapping) else None
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return {}
    schema = fmt.get("schema")
    if not isinstance(schema, Mapping):
        return {}
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": dict(schema)},
        }
    }
