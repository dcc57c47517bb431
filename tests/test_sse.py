"""
Tests for L{ccrouter.sse}.  No reactor.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ccrouter.sse import EventBoundary, EventNames


def boundaryAfter(*chunks: bytes) -> bool:
    boundary = EventBoundary()
    for chunk in chunks:
        boundary.feed(chunk)
    return boundary.atBoundary


class EventBoundaryTests(SynchronousTestCase):
    def test_startIsABoundary(self) -> None:
        self.assertTrue(boundaryAfter())
        self.assertTrue(boundaryAfter(b""))

    def test_blankLineEndsAnEvent(self) -> None:
        """
        LF, CR LF and CR line endings all count, in any mix.
        """
        for ending in [b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n", b"\r\n\n", b"\r\n\r"]:
            self.assertTrue(boundaryAfter(b"data: {}" + ending), ending)

    def test_insideAnEvent(self) -> None:
        for partial in [b"event: x", b"event: x\n", b"event: x\r\n", b'data: {"a"']:
            self.assertFalse(boundaryAfter(partial), partial)

    def test_splitAcrossChunks(self) -> None:
        self.assertTrue(boundaryAfter(b"data: 1\r\n", b"\r", b"\n"))
        self.assertFalse(boundaryAfter(b"data: 1\n\n", b"data: 2\n"))

    @given(
        st.lists(st.binary(min_size=1, max_size=20), max_size=5),
        st.sampled_from([b"\n", b"\r\n", b"\r"]),
        st.data(),
    )
    def test_anyChunking(
        self, payloads: list[bytes], ending: bytes, data: st.DataObject
    ) -> None:
        """
        Z2: however a stream of whole events is cut into chunks, it ends at a
        boundary; with a partial event appended, it does not.
        """
        events = b"".join(
            b"data: " + p.replace(b"\n", b"").replace(b"\r", b"") + b"x" + ending * 2
            for p in payloads
        )
        for stream, expected in [(events, True), (events + b"data: partial", False)]:
            cuts = sorted(
                data.draw(
                    st.lists(st.integers(0, len(stream)), max_size=6), label="cuts"
                )
            )
            pieces = [
                stream[a:b]
                for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)
            ]
            self.assertEqual(boundaryAfter(*pieces), expected)


def namesAfter(*chunks: bytes) -> tuple[bool, bool]:
    names = EventNames()
    for chunk in chunks:
        names.feed(chunk)
    return names.sawMessageStop, names.sawError


class EventNamesTests(SynchronousTestCase):
    def test_namesSeen(self) -> None:
        """
        F7: an C{error} event and C{message_stop} are noticed with any line
        ending, also when a line is cut across chunks; a data line that
        mentions them is not an event name.
        """
        for ending in [b"\n", b"\r\n", b"\r"]:
            stream = b"event: error\ndata: {}\n\nevent:message_stop\n\n".replace(
                b"\n", ending
            )
            self.assertEqual(namesAfter(stream), (True, True), ending)
            self.assertEqual(
                namesAfter(*[stream[i : i + 1] for i in range(len(stream))]),
                (True, True),
            )
        self.assertEqual(
            namesAfter(b'data: event: error\n\ndata: "event: message_stop"\n\n'),
            (False, False),
        )

    def test_overlongLineIsNeverAName(self) -> None:
        """
        Z2: a line longer than an event name can be is data however the
        stream is cut (hypothesis found a cut that made C{event: error}
        followed by padding and more text read as an C{error} event).
        """
        for line in [
            b"event: error" + b" " * 60 + b"junk",
            b"event: message_stop" + b" " * 50,
        ]:
            stream = line + b"\n\n"
            for cut in range(len(stream) + 1):
                self.assertEqual(
                    namesAfter(stream[:cut], stream[cut:]), (False, False), cut
                )
