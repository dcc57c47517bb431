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
