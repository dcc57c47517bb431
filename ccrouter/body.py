# -*- test-case-name: tests.test_body -*-
"""
Reading and editing the top level of a JSON request body without
re-serialising it.

A routed request must reach the upstream byte for byte as the client sent
it, except for the C{model} value when a route renames the model: a typed
decode and re-encode would reorder keys, change number formats and drop
fields the proxy does not know, which breaks thinking signatures and prompt
caching.  So the top-level object is scanned once, recording where each
value sits, and an edit splices one value in place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import NamedTuple

from attrs import frozen

_DECODER = json.JSONDecoder()
_SCAN_STRING: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class TopLevelValue(NamedTuple):
    """
    A value of the top-level JSON object and where its text sits.  (A named
    tuple: one is made for each member of every routed request body.)

    @ivar start: Offset of its first character in the decoded text.
    @ivar end: Offset just past its last character.
    """

    value: object
    start: int
    end: int


@frozen
class RequestBody:
    """
    A request body whose top level is a JSON object.

    @ivar text: The body decoded from UTF-8; encoding it again gives back the
        original bytes exactly.
    @ivar fields: The top-level members; for a repeated key the last one, as
        JSON parsers (and so the upstream) take it.
    """

    text: str
    fields: dict[str, TopLevelValue]

    @property
    def model(self) -> str | None:
        member = self.fields.get("model")
        if member is None or not isinstance(member.value, str):
            return None
        return member.value

    @property
    def streaming(self) -> bool:
        member = self.fields.get("stream")
        return member is not None and member.value is True

    def withModel(self, model: str) -> bytes:
        """
        The original body bytes with only the top-level C{model} value
        replaced.
        """
        member = self.fields["model"]
        replacement = json.dumps(model, ensure_ascii=False)
        return (
            self.text[: member.start] + replacement + self.text[member.end :]
        ).encode("utf-8")


def parseRequestBody(body: bytes) -> RequestBody | None:
    """
    Scan a body whose top level should be a JSON object.

    @return: The scanned body, or L{None} if it is not UTF-8 JSON with an
        object at the top level.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        fields = _scanObject(text)
    except (ValueError, IndexError, RecursionError):
        return None
    if fields is None:
        return None
    return RequestBody(text=text, fields=fields)


def _scanObject(text: str) -> dict[str, TopLevelValue] | None:
    length = len(text)
    position = _skip(text, 0)
    if text[position : position + 1] != "{":
        return None
    position = _skip(text, position + 1)
    fields: dict[str, TopLevelValue] = {}
    if text[position] == "}":
        position += 1
    else:
        while True:
            if text[position] != '"':
                return None
            key, position = _SCAN_STRING(text, position + 1)
            # Whitespace is skipped only where there is some (a compact body,
            # as Claude Code sends, has none).
            if position < length and text[position] in _SPACE:
                position = _skip(text, position)
            if text[position] != ":":
                return None
            start = position + 1
            if start < length and text[start] in _SPACE:
                start = _skip(text, start)
            value, end = _DECODER.raw_decode(text, start)
            fields[key] = TopLevelValue(value, start, end)
            position = end
            if position < length and text[position] in _SPACE:
                position = _skip(text, position)
            if text[position] == ",":
                position += 1
                if position < length and text[position] in _SPACE:
                    position = _skip(text, position)
            elif text[position] == "}":
                position += 1
                break
            else:
                return None
    if _skip(text, position) != length:
        return None
    return fields


#: The characters JSON counts as whitespace.
_SPACE = " \t\n\r"


def _skip(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    assert match is not None
    return match.end()
