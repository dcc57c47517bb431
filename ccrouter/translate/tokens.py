# -*- test-case-name: tests.test_dialects -*-
"""
A local estimate of an Anthropic request's input tokens, for upstreams that
cannot count them (C{count_tokens} on an OpenAI-format upstream) and for
the C{message_start} of a translated stream.  Pure.

Claude's tokenizer is not public; the estimate counts the characters every
part of the request contributes (system, messages, tool calls and results,
tool definitions) at about four characters per token, which is what
Anthropic's guidance gives for English prose and code, plus a fixed cost
per image and per message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

CHARACTERS_PER_TOKEN = 4.0
#: Anthropic bills an image by its size (about width x height / 750); the
#: size is not known without decoding it, so a typical screenshot's cost.
IMAGE_TOKENS = 1600
#: Role markers and separators around each message.
MESSAGE_OVERHEAD = 4
#: The framing around the tool definitions.
TOOLS_OVERHEAD = 300


def estimateTokens(body: Mapping[str, Any]) -> int:
    characters = 0
    tokens = 0
    characters += _text(body.get("system"))
    for message in body.get("messages") or ():
        tokens += MESSAGE_OVERHEAD
        if isinstance(message, Mapping):
            count, images = _content(message.get("content"))
            characters += count
            tokens += images * IMAGE_TOKENS
    tools = body.get("tools")
    if tools:
        tokens += TOOLS_OVERHEAD
        characters += len(json.dumps(tools, ensure_ascii=False))
    return tokens + round(characters / CHARACTERS_PER_TOKEN)


def _text(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    count, _ = _content(value)
    return count


def _content(content: Any) -> tuple[int, int]:
    """
    Characters and images in a message's content.
    """
    if isinstance(content, str):
        return len(content), 0
    characters = images = 0
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text":
            characters += len(str(block.get("text", "")))
        elif kind in ("thinking", "redacted_thinking"):
            characters += len(str(block.get("thinking", block.get("data", ""))))
        elif kind == "tool_use":
            characters += len(str(block.get("name", "")))
            characters += len(json.dumps(block.get("input", {}), ensure_ascii=False))
        elif kind == "tool_result":
            count, nested = _content(block.get("content"))
            characters += count
            images += nested
        elif kind == "image":
            images += 1
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, Mapping) and source.get("type") == "text":
                characters += len(str(source.get("data", "")))
            else:
                # A PDF: roughly its decoded size in text.
                characters += len(str(source)) * 3 // 4 if source else 0
    return characters, images
