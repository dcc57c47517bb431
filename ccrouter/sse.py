# -*- test-case-name: tests.test_sse -*-
"""
Server-sent events, as far as relaying them needs.
"""

from __future__ import annotations

#: The last bytes that can decide whether a stream ends on a blank line.
_TAIL = 4


class EventBoundary:
    """
    Follows a relayed SSE byte stream just enough to tell whether it stands
    between two events, where an extra event can be written without
    corrupting the one in flight.

    Lines end in CR LF, LF or CR; an event ends at an empty line, so the
    stream is at a boundary when its last two line endings are adjacent (or
    nothing has been sent).
    """

    def __init__(self) -> None:
        self._tail = b""
        self._started = False

    def feed(self, data: bytes) -> None:
        if data:
            self._started = True
            self._tail = (self._tail + data)[-_TAIL:]

    @property
    def atBoundary(self) -> bool:
        if not self._started:
            return True
        endings = 0
        position = len(self._tail)
        while position > 0 and endings < 2:
            if self._tail[position - 1 : position] == b"\n":
                position -= 2 if self._tail[position - 2 : position - 1] == b"\r" else 1
            elif self._tail[position - 1 : position] == b"\r":
                position -= 1
            else:
                return False
            endings += 1
        return endings == 2


#: Event names are short; a longer partial line is a data line.
_MAX_NAME_LINE = 64


class EventNames:
    """
    Notes the C{event:} names a relayed stream carries, as far as telling a
    complete Anthropic stream (one with C{message_stop}) from a failed one
    (one with C{error}) needs.  Data lines are skipped without being kept.
    """

    def __init__(self) -> None:
        self._partial = b""
        self.sawMessageStop = False
        self.sawError = False

    def feed(self, data: bytes) -> None:
        buffered = self._partial + data
        lines = buffered.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        # Kept one byte longer than a name line can be, so that a longer line
        # is skipped however the stream was cut: what is seen must not
        # depend on where the chunks end.
        self._partial = lines.pop()[: _MAX_NAME_LINE + 1]
        for line in lines:
            if len(line) <= _MAX_NAME_LINE and line.startswith(b"event:"):
                self._sawEvent(line[6:].strip())

    def _sawEvent(self, name: bytes) -> None:
        if name == b"message_stop":
            self.sawMessageStop = True
        elif name == b"error":
            self.sawError = True
