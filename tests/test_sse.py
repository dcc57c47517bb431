"""
Tests for L{ccrouter.sse}.  No reactor.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ccrouter.sse import EventBoundary


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
        However a stream of whole events is cut into chunks, it ends at a
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
