"""
Tests for L{ccrouter.usage}: token usage read from response bodies as they
are relayed, cut into pieces anywhere.  No reactor.
"""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import Callable, Iterator, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ccrouter.translate.stream import StreamTranslator
from ccrouter.usage import MAX_EVENT_BYTES, MAX_TOKENS, Usage, UsageReader

SSE = b"text/event-stream"
JSON = b"application/json"


def sse(text: str) -> bytes:
    """
    A recorded stream, written out below one event per paragraph.
    """
    return text.lstrip("\n").encode("utf-8")


# protocol.md 3.4: a text answer.
TEXT = sse(r"""
event: message_start
data: {"type":"message_start","message":{"id":"msg_01TextExample","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":21,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", world!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":9}}

event: message_stop
data: {"type":"message_stop"}

""")
TEXT_USAGE = Usage(21, 9, 0, 0, "end_turn")

# protocol.md 3.5: a text preamble, then tool_use.
TOOL = sse(r"""
event: message_start
data: {"type":"message_start","message":{"id":"msg_01ToolExample","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":377,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I'll check the weather in Paris."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01Wx9kQe","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"locati"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"on\": \"Paris\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":65}}

event: message_stop
data: {"type":"message_stop"}

""")
TOOL_USAGE = Usage(377, 65, 0, 0, "tool_use")

# protocol.md 3.6: thinking, then text; message_start has no cache fields.
THINKING = sse(r"""
event: message_start
data: {"type":"message_start","message":{"id":"msg_01ThinkExample","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":40,"output_tokens":3}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"1071 = 2 x 462 + 147 ..."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM..."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"The GCD is 21."}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":120}}

event: message_stop
data: {"type":"message_stop"}

""")
THINKING_USAGE = Usage(40, 120, None, None, "end_turn")

# Prompt caching, and message_delta events that carry input and cache totals
# (a server tool ran), each overwriting only the fields it has.  The text
# mentions message_delta, and a comment sits in one event.
CACHE = sse(r"""
event: message_start
data: {"type":"message_start","message":{"id":"msg_01CacheExample","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":1500,"cache_read_input_tokens":20480,"output_tokens":2,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

: keep-alive
event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"event: message_delta\ndata: {\"usage\":{\"output_tokens\":999}}\n\n"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"pause_turn","stop_sequence":null},"usage":{"output_tokens":30,"input_tokens":14,"cache_read_input_tokens":20490,"server_tool_use":{"web_search_requests":1}}}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":64,"cache_creation_input_tokens":1600}}

event: message_stop
data: {"type":"message_stop"}

""")
CACHE_USAGE = Usage(14, 64, 20490, 1600, "max_tokens")

# Legal but unusual SSE: no event line on message_start (its JSON type
# counts), data split over several lines, no space after the colons, id and
# retry fields, comments, and extra blank lines between events.
ODD = sse(r"""
: hello

id: 1
retry: 3000
data: {"type":"message_start",
data:  "message":{"usage":{"input_tokens":5,
data:"output_tokens":1}}}


event:content_block_delta
data:{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}

:comment
event:message_delta
:comment
data:{"type":"message_delta","delta":{"stop_reason":"stop_sequence"},
data:"usage":{"output_tokens":6,"cache_read_input_tokens":2}}

event: message_stop
data: {"type":"message_stop"}

""")
ODD_USAGE = Usage(5, 6, 2, None, "stop_sequence")

RECORDED = {
    "text": (TEXT, TEXT_USAGE),
    "tool": (TOOL, TOOL_USAGE),
    "thinking": (THINKING, THINKING_USAGE),
    "cache": (CACHE, CACHE_USAGE),
    "odd": (ODD, ODD_USAGE),
}

# protocol.md section 2: a non-streamed answer.
MESSAGE = (
    b'{"id":"msg_01Pq3Zt8","type":"message","role":"assistant",'
    b'"model":"claude-sonnet-4-5",'
    b'"content":[{"type":"text","text":"I\'ll check the weather."},'
    b'{"type":"tool_use","id":"toolu_01Wx","name":"get_weather",'
    b'"input":{"location":"Paris"}}],'
    b'"stop_reason":"tool_use","stop_sequence":null,'
    b'"usage":{"input_tokens":377,"cache_creation_input_tokens":0,'
    b'"cache_read_input_tokens":0,"output_tokens":65,"service_tier":"standard"}}'
)
MESSAGE_USAGE = Usage(377, 65, 0, 0, "tool_use")


def crlf(stream: bytes) -> bytes:
    return stream.replace(b"\n", b"\r\n")


def cr(stream: bytes) -> bytes:
    return stream.replace(b"\n", b"\r")


ENDINGS: dict[str, Callable[[bytes], bytes]] = {
    "LF": lambda stream: stream,
    "CRLF": crlf,
    "CR": cr,
}


def read(
    pieces: Sequence[bytes],
    contentType: bytes | None = SSE,
    encoding: bytes | None = None,
    limit: int = 8 * 1024 * 1024,
    eventLimit: int = MAX_EVENT_BYTES,
) -> Usage:
    """
    The usage a reader finds in C{pieces}, fed without L{UsageReader.feed}'s
    safety net, so that an exception fails the test.
    """
    reader = UsageReader(contentType, encoding, limit, eventLimit=eventLimit)
    for piece in pieces:
        reader._read(piece)
    return reader.result()


def chunkings(body: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """
    C{body} whole, in two pieces cut at every offset, and one byte at a
    time, each with a label.
    """
    yield "whole", [body]
    for cut in range(len(body) + 1):
        yield f"cut at {cut}", [body[:cut], body[cut:]]
    yield "bytewise", [body[i : i + 1] for i in range(len(body))]


def cutAt(body: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(cuts)
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body, mtime=0)


class Names:
    """
    A L{ccrouter.translate.stream.ToolNameMap} for a request that renamed
    no tool.
    """

    def toOriginal(self, name: str) -> str:
        return name


class UsageTestCase(SynchronousTestCase):
    def assertEveryCut(
        self,
        body: bytes,
        expected: Usage,
        contentType: bytes | None = SSE,
        encoding: bytes | None = None,
        context: object = None,
        **kwargs: int,
    ) -> None:
        """
        However C{body} is cut, the reader finds C{expected}.

        @param context: Said in a failure's message.
        """
        for label, pieces in chunkings(body):
            self.assertEqual(
                read(pieces, contentType, encoding, **kwargs),
                expected,
                (context, label),
            )


class RecordedStreamTests(UsageTestCase):
    """
    Anthropic SSE streams, as recorded.
    """

    def test_recorded(self) -> None:
        """
        Each recorded stream gives its usage and stop reason exactly, with
        LF, CR LF or CR line ends, whole, cut in two at every offset, and fed
        one byte at a time.
        """
        for name, (stream, expected) in RECORDED.items():
            for ending, convert in ENDINGS.items():
                self.assertEveryCut(convert(stream), expected, context=(name, ending))

    def test_mixedLineEnds(self) -> None:
        """
        Line ends may change from line to line.  (A CR is never followed
        by an LF ending an empty line: together they would be one CR LF.)
        """
        lines = CACHE.split(b"\n")
        mixed = b"".join(
            line + (b"\n", b"\r", b"\r\n")[i % 3] for i, line in enumerate(lines)
        )
        self.assertEveryCut(mixed, CACHE_USAGE)

    def test_asItGoes(self) -> None:
        """
        The result is there at any time: after C{message_start} it has the
        input counts and the placeholder output count; each C{message_delta}
        then overwrites the fields it carries.
        """
        reader = UsageReader(SSE, None)
        self.assertEqual(reader.result(), Usage())
        events = CACHE.split(b"\n\n")
        reader.feed(events[0] + b"\n\n")
        self.assertEqual(reader.result(), Usage(12, 2, 20480, 1500, None))
        reader.feed(b"\n\n".join(events[1:6]) + b"\n\n")
        self.assertEqual(reader.result(), Usage(14, 30, 20490, 1500, "pause_turn"))
        reader.feed(b"\n\n".join(events[6:]))
        self.assertEqual(reader.result(), CACHE_USAGE)

    def test_unfinishedEventIgnored(self) -> None:
        """
        An event only counts once the blank line after it arrived, as SSE
        says: a stream cut short in its last event does not count it.
        """
        end = TEXT.index(b"event: message_delta")
        cut = TEXT[: TEXT.index(b"\n", end + 22)]
        self.assertEveryCut(cut, Usage(21, 1, 0, 0, None))
        self.assertEveryCut(cut + b"\n", Usage(21, 1, 0, 0, None))
        self.assertEveryCut(cut + b"\r\n\r", TEXT_USAGE)

    def test_errorEvent(self) -> None:
        """
        A stream that ends with an C{error} event keeps what C{message_start}
        said and has no stop reason.
        """
        start = TEXT[: TEXT.index(b"\n\n") + 2]
        stream = start + (
            b"event: error\n"
            b'data: {"type":"error","error":{"type":"overloaded_error",'
            b'"message":"Overloaded"}}\n\n'
        )
        self.assertEveryCut(stream, Usage(21, 1, 0, 0, None))

    def test_eventNameWins(self) -> None:
        """
        The C{event:} name decides what an event is; the JSON C{type} only
        counts for an event without a name.
        """
        stream = (
            b"event: content_block_delta\n"
            b'data: {"type":"message_delta","usage":{"output_tokens":5}}\n\n'
            b"event: message_delta\n"
            b'data: {"usage":{"output_tokens":6},"delta":{"stop_reason":"a"}}\n\n'
            b'data: {"type":"message_delta","usage":{"input_tokens":7}}\n\n'
            b"event:\n"
            b'data: {"type":"message_delta","usage":{"cache_read_input_tokens":8}}\n\n'
            b'data: {"type":"content_block_delta","usage":{"output_tokens":9}}\n\n'
            b"event: message_delta\nevent: ping\n"
            b'data: {"type":"message_delta","usage":{"output_tokens":10}}\n\n'
        )
        self.assertEveryCut(stream, Usage(7, 6, 8, None, "a"))

    def test_malformedEvents(self) -> None:
        """
        Events that are not JSON objects, or whose usage is not an object,
        are skipped without disturbing the rest.
        """
        stream = (
            b"event: message_start\ndata: {not json\n\n"
            b"event: message_start\ndata: [1, 2]\n\n"
            b'event: message_start\ndata: {"message": []}\n\n'
            b'event: message_start\ndata: {"message": {"usage": 4}}\n\n'
            b"event: message_delta\n\n"
            b'event: message_delta\ndata: {"usage": null, "delta": "x"}\n\n'
            b"event: message_delta\ndata: " + b"[" * 100_000 + b"\n\n"
            b"event: message_delta\ndata: \xff\xfe\n\n"
            b'event: message_delta\ndata: {"usage":{"output_tokens":3}}\n\n'
        )
        for pieces in ([stream], cutAt(stream, [100, 50_000, 100_100])):
            self.assertEqual(read(pieces), Usage(None, 3, None, None, None))

    def test_unbelievableNumbers(self) -> None:
        """
        Only whole, non-negative counts up to L{MAX_TOKENS} count; anything
        else leaves the field as it was.  Only a short string is a stop
        reason.
        """
        start = TEXT[: TEXT.index(b"\n\n") + 2]
        tooBig = str(MAX_TOKENS + 1).encode()
        for bad in [b"-1", b"1.5", b"1e3", b"true", b'"7"', b"null", b"[]", tooBig]:
            stream = start + (
                b"event: message_delta\n"
                b'data: {"usage":{"output_tokens":%s,"input_tokens":%s,'
                b'"cache_read_input_tokens":%s}}\n\n' % (bad, bad, bad)
            )
            self.assertEqual(read([stream]), Usage(21, 1, 0, 0, None), bad)
        good = TEXT[TEXT.index(b"event: message_delta") :]
        for bad in [b"1", b"true", b"null", b"{}", b'""', b'"%s"' % (b"x" * 65,)]:
            stream = (
                start
                + good
                + (
                    b"event: message_delta\n"
                    b'data: {"delta":{"stop_reason":%s},"usage":{"output_tokens":%d}}'
                    b"\n\n" % (bad, MAX_TOKENS)
                )
            )
            expected = Usage(21, MAX_TOKENS, 0, 0, "end_turn")
            self.assertEqual(read([stream]), expected, bad)
        # Python refuses to parse an int this long: the event is skipped.
        stream = start + (
            b"event: message_delta\n"
            b'data: {"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":%s}}'
            b"\n\n" % (b"9" * 5000,)
        )
        self.assertEqual(read([stream]), Usage(21, 1, 0, 0, None))

    def test_longEventIgnored(self) -> None:
        """
        An event longer than the event limit is skipped, however it
        arrives, and the events after it are read; one exactly at the limit
        is read.
        """
        start = TEXT[: TEXT.index(b"\n\n") + 2]

        def delta(output: int, pad: int) -> bytes:
            return (
                b"event: message_delta\ndata: "
                b'{"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":%d},'
                b'"pad":"%s"}' % (output, b"x" * pad)
            )

        atLimit = delta(9, 300)
        limit = len(atLimit)
        overLimit = delta(99, 301)
        self.assertGreater(limit, len(start))
        cases = [
            (start + atLimit + b"\n\n", TEXT_USAGE),
            # Extra blank lines before or after an event are not part of it.
            (start + b"\n\n" + atLimit + b"\n\n\n", TEXT_USAGE),
            (start + overLimit + b"\n\n", Usage(21, 1, 0, 0, None)),
            (start + atLimit + b"\n\n" + overLimit + b"\n\n", TEXT_USAGE),
            (start + b":" + b"x" * 3 * limit + b"\n\n" + atLimit + b"\n\n", TEXT_USAGE),
            (
                start + b"data: " + b"x" * 3 * limit + b"\r\n\r\n" + atLimit + b"\n\n",
                TEXT_USAGE,
            ),
        ]
        for number, (stream, expected) in enumerate(cases):
            for ending, convert in ENDINGS.items():
                self.assertEveryCut(
                    convert(stream),
                    expected,
                    context=(number, ending),
                    eventLimit=limit,
                )

    def test_defaultEventLimit(self) -> None:
        """
        By default an event of up to 1 MiB is read, and a longer one is not.
        """
        start = TEXT[: TEXT.index(b"\n\n") + 2]
        head = b'event: message_delta\ndata: {"usage":{"output_tokens":9},"pad":"'
        for padding, expected in [
            (MAX_EVENT_BYTES - len(head) - 2, 9),
            (MAX_EVENT_BYTES - len(head) - 1, 1),
        ]:
            stream = start + head + b"x" * padding + b'"}\n\n'
            for cuts in ([], [len(start) + 10], list(range(0, len(stream), 4096))):
                self.assertEqual(read(cutAt(stream, cuts)).outputTokens, expected)

    def test_boundedMemory(self) -> None:
        """
        A stream that never ends its event (one endless line) is not
        kept: memory stays near the event limit.
        """
        reader = UsageReader(SSE, None)
        chunk = b"data: " + b"x" * (64 * 1024 - 6)
        tracemalloc.start()
        try:
            for _ in range(512):
                reader.feed(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 3 * MAX_EVENT_BYTES)
        self.assertEqual(reader.result(), Usage())


class TranslatedStreamTests(UsageTestCase):
    """
    OpenAI streams, translated to Anthropic streams by ccrouter before they
    are written, carry the upstream's usage.
    """

    UPSTREAM = [
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        b'"finish_reason":null}],"usage":null}\n\n',
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],'
        b'"usage":null}\n\n',
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{},"finish_reason":"length"}],'
        b'"usage":null}\n\n',
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[],"usage":{"prompt_tokens":2021,"completion_tokens":4,'
        b'"total_tokens":2025,"prompt_tokens_details":{"cached_tokens":2000}}}\n\n',
        b"data: [DONE]\n\n",
    ]

    def translated(self) -> list[bytes]:
        """
        What ccrouter writes for L{UPSTREAM}, write by write.
        """
        translator = StreamTranslator(
            "claude-sonnet-4-5", toolNames=Names(), messageId="msg_u", inputTokens=500
        )
        writes = [translator.feed(chunk) for chunk in self.UPSTREAM]
        writes.append(translator.finish())
        return [write for write in writes if write]

    def test_translatedUsage(self) -> None:
        """
        The estimate in C{message_start} is replaced by the upstream's
        figures, with cached prompt tokens as cache reads.
        """
        writes = self.translated()
        expected = Usage(21, 4, 2000, 0, "max_tokens")
        self.assertEqual(read(writes), expected)
        self.assertEqual(read(writes[:1]), Usage(500, 1, 0, 0, None))
        self.assertEveryCut(b"".join(writes), expected)


class GzipTests(UsageTestCase):
    """
    Bodies with a C{Content-Encoding}.
    """

    def test_gzipStream(self) -> None:
        """
        A gzip-encoded stream is inflated as it comes, however it is cut;
        C{x-gzip} and any case are gzip too.
        """
        self.assertEveryCut(gzipped(CACHE), CACHE_USAGE, encoding=b"gzip")
        for name in [b"x-gzip", b" GZip "]:
            self.assertEqual(read([gzipped(TEXT)], encoding=name), TEXT_USAGE)

    def test_gzipJSON(self) -> None:
        """
        A gzip-encoded JSON message is read, however it is cut.
        """
        self.assertEveryCut(gzipped(MESSAGE), MESSAGE_USAGE, JSON, b"gzip")

    def test_brokenGzip(self) -> None:
        """
        A body that is not valid gzip counts for nothing, even after parts
        of it inflated well.
        """
        body = bytearray(gzipped(TEXT))
        body[-6] ^= 0xFF  # the CRC
        self.assertEveryCut(bytes(body), Usage(), encoding=b"gzip")
        self.assertEveryCut(TEXT, Usage(), encoding=b"gzip")
        self.assertEveryCut(TEXT, Usage(), encoding=b"x-gzip")

    def test_trailingGarbage(self) -> None:
        """
        Bytes after the end of the gzip member are ignored.
        """
        body = gzipped(TEXT) + b"\x00garbage" + gzipped(CACHE)
        self.assertEqual(read([body], encoding=b"gzip"), TEXT_USAGE)

    def test_limitExactly(self) -> None:
        """
        A JSON body that inflates to exactly the limit is read; one byte
        more, and it is not.
        """
        body = gzipped(MESSAGE)
        self.assertEqual(read([body], JSON, b"gzip", len(MESSAGE)), MESSAGE_USAGE)
        self.assertEqual(read([body], JSON, b"gzip", len(MESSAGE) - 1), Usage())

    def bomb(self, head: bytes, size: int, tail: bytes) -> bytes:
        """
        A small gzip body that inflates to C{head}, C{size} zero bytes and
        C{tail}.
        """
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = bytes(1024 * 1024)
        parts = [compressor.compress(head)]
        parts.extend(compressor.compress(block) for _ in range(size // len(block)))
        parts.append(compressor.compress(tail))
        parts.append(compressor.flush())
        return b"".join(parts)

    def feedTraced(self, reader: UsageReader, body: bytes) -> int:
        """
        Feed C{body} in 64 KiB pieces.

        @return: The peak memory allocated while feeding.
        """
        pieces = cutAt(body, list(range(0, len(body), 64 * 1024)))
        tracemalloc.start()
        try:
            for piece in pieces:
                reader.feed(piece)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def test_bomb(self) -> None:
        """
        A gzip bomb never inflates past the limit: memory stays near the
        limit, while the body would inflate to 64 times as much.  A JSON
        bomb counts for nothing; a stream keeps what came before the limit.
        """
        limit = 1024 * 1024
        size = 64 * limit
        start = TEXT[: TEXT.index(b"\n\n") + 2]
        delta = TEXT[TEXT.index(b"event: message_delta") :]
        cases = [
            (JSON, self.bomb(b'{"type":"message","x":"', size, b'"}'), Usage()),
            (SSE, self.bomb(start + b":", size, b"\n\n" + delta), Usage(21, 1, 0, 0)),
        ]
        for contentType, body, expected in cases:
            self.assertLess(len(body), limit)
            reader = UsageReader(contentType, b"gzip", limit)
            self.assertLess(self.feedTraced(reader, body), 4 * limit)
            self.assertEqual(reader.result(), expected)

    def test_otherCodings(self) -> None:
        """
        Content codings other than gzip and identity give no usage, and
        feeding them keeps nothing.
        """
        body = TEXT * 1000
        for coding in [b"br", b"deflate", b"zstd", b"compress", b"gzip, br", b"x"]:
            self.assertEqual(read([TEXT], SSE, coding), Usage(), coding)
            self.assertEqual(read([MESSAGE], JSON, coding), Usage(), coding)
            reader = UsageReader(SSE, coding)
            self.assertLess(self.feedTraced(reader, body), 4096)
        for coding in [None, b"", b"identity", b" Identity"]:
            self.assertEqual(read([TEXT], SSE, coding), TEXT_USAGE, coding)


class JSONTests(UsageTestCase):
    """
    Non-streamed answers.
    """

    def test_message(self) -> None:
        """
        A message's top-level C{usage} and C{stop_reason} are read, however
        the body is cut; C{Content-Type} parameters and case do not matter.
        """
        self.assertEveryCut(MESSAGE, MESSAGE_USAGE, JSON)
        for contentType in [b"application/json; charset=utf-8", b"Application/JSON"]:
            self.assertEqual(read([MESSAGE], contentType), MESSAGE_USAGE)

    def test_cacheFields(self) -> None:
        """
        Cache fields map to cache reads and writes; missing fields are
        L{None}; unbelievable ones are ignored.
        """
        body = json.dumps(
            {
                "type": "message",
                "stop_reason": "end_turn",
                "usage": {
                    "input_tokens": 3,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 50,
                    "output_tokens": -1,
                },
            }
        ).encode()
        self.assertEqual(read([body], JSON), Usage(3, None, 100, 50, "end_turn"))

    def test_notAMessage(self) -> None:
        """
        An error body, garbage, an empty body and JSON that is not a message
        give no usage.
        """
        error = (
            b'{"type":"error","error":{"type":"overloaded_error",'
            b'"message":"Overloaded"},"usage":{"input_tokens":1}}'
        )
        for body in [
            error,
            b"",
            b"garbage",
            MESSAGE[:-1],
            b"[1]",
            b'"message"',
            b'{"usage":{"input_tokens":1}}',
            b"[" * 100_000,
        ]:
            self.assertEqual(read([body], JSON), Usage(), body[:30])
        self.assertEqual(read([b'{"type":"message","usage":[]}'], JSON), Usage())

    def test_overLimit(self) -> None:
        """
        A body longer than the limit gives no usage; one exactly at it is
        read.
        """
        limit = len(MESSAGE)
        self.assertEveryCut(MESSAGE, MESSAGE_USAGE, JSON, limit=limit)
        self.assertEveryCut(MESSAGE + b" ", Usage(), JSON, limit=limit)

    def test_resultAnyTime(self) -> None:
        """
        L{UsageReader.result} may be asked before the body is whole; it
        then reflects what came so far, and later the whole body.
        """
        reader = UsageReader(JSON, None)
        reader.feed(MESSAGE[:100])
        self.assertEqual(reader.result(), Usage())
        reader.feed(MESSAGE[100:])
        self.assertEqual(reader.result(), MESSAGE_USAGE)
        self.assertIs(reader.result(), reader.result())


class ContentTypeTests(SynchronousTestCase):
    """
    Only SSE streams and JSON bodies are read.
    """

    def test_otherTypes(self) -> None:
        """
        Other content types, or none, give no usage whatever the body.
        """
        for contentType in [
            None,
            b"",
            b"text/plain",
            b"text/html",
            b"text/event-streams",
            b"application/jsonx",
            b"\xff\x00;",
        ]:
            for body in (TEXT, MESSAGE):
                self.assertEqual(read([body], contentType), Usage(), contentType)

    def test_safetyNet(self) -> None:
        """
        Should reading ever fail, L{UsageReader.feed} does not raise: the
        usage is given up instead.
        """
        reader = UsageReader(SSE, None)
        reader.feed(TEXT)

        def broken(data: bytes) -> None:
            raise RuntimeError("bug")

        reader._consume = broken
        reader.feed(b"more")
        self.assertEqual(reader.result(), Usage())


def referenceUsage(stream: bytes, eventLimit: int = MAX_EVENT_BYTES) -> Usage:
    """
    The usage in a whole, identity-encoded SSE stream, found line by line
    the slow and obvious way.
    """
    fields: dict[str, int] = {}
    stop: str | None = None
    lines: list[bytes] = []
    events: list[list[bytes]] = []
    for raw in stream.splitlines(keepends=True):
        line = raw.rstrip(b"\r\n")
        if line == raw:
            break  # an unfinished last line
        if line:
            lines.append(line)
        elif lines:
            events.append(lines)
            lines = []
    for event in events:
        if sum(map(len, event)) + len(event) - 1 > eventLimit:
            continue
        name = None
        data = []
        for line in event:
            if line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value
        if not data:
            continue
        try:
            payload = json.loads(b"\n".join(data))
        except (ValueError, RecursionError):
            continue
        if not isinstance(payload, dict):
            continue
        if not name:
            if not isinstance(payload.get("type"), str):
                continue
            name = payload["type"].encode("utf-8", "replace")
        if name == b"message_start":
            usage = payload.get("message", {})
            usage = usage.get("usage") if isinstance(usage, dict) else None
        elif name == b"message_delta":
            usage = payload.get("usage")
            delta = payload.get("delta")
            if isinstance(delta, dict):
                reason = delta.get("stop_reason")
                if isinstance(reason, str) and 0 < len(reason) <= 64:
                    stop = reason
        else:
            continue
        if not isinstance(usage, dict):
            continue
        for key, attribute in [
            ("input_tokens", "inputTokens"),
            ("output_tokens", "outputTokens"),
            ("cache_read_input_tokens", "cacheReadTokens"),
            ("cache_creation_input_tokens", "cacheWriteTokens"),
        ]:
            value = usage.get(key)
            if type(value) is int and 0 <= value <= MAX_TOKENS:
                fields[attribute] = value
    return Usage(**fields, stopReason=stop)


#: Pieces of SSE worth inserting into a stream to break it interestingly.
FRAGMENTS = [
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\r\r",
    b":",
    b": ",
    b"data:",
    b"data: ",
    b"event:",
    b"event: message_delta\n",
    b"event: message_start\r\n",
    b"message_",
    b"message_delta",
    b"message_start",
    b'"usage":{"output_tokens":7}',
    b'data: {"type":"message_delta","usage":{"input_tokens":3},'
    b'"delta":{"stop_reason":"x"}}\n\n',
    b'{"message":{"usage":{"cache_read_input_tokens":4}}}',
    b"\xff",
    b"{",
    b"}",
    b"-1",
    b"true",
]

mutation = st.tuples(
    st.sampled_from(["insert", "delete", "replace"]),
    st.floats(0, 1),
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=8)),
)


def mutate(stream: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    for operation, where, fragment in mutations:
        at = int(where * len(stream))
        if operation == "insert":
            stream = stream[:at] + fragment + stream[at:]
        elif operation == "delete":
            stream = stream[:at] + stream[at + len(fragment) + 1 :]
        else:
            stream = stream[:at] + fragment + stream[at + len(fragment) :]
    return stream


def pieces(data: st.DataObject, body: bytes) -> list[bytes]:
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=12), label="cuts")
    return cutAt(body, cuts)


class PropertyTests(SynchronousTestCase):
    """
    Whatever the bytes, reading never raises, and how the body is cut never
    changes the result.
    """

    @settings(max_examples=500, deadline=None)
    @given(
        st.binary(max_size=600),
        st.sampled_from([SSE, JSON, b"text/plain"]),
        st.sampled_from([None, b"gzip", b"br"]),
        st.data(),
    )
    def test_arbitraryBytes(
        self,
        body: bytes,
        contentType: bytes,
        encoding: bytes | None,
        data: st.DataObject,
    ) -> None:
        """
        Arbitrary bytes, under any content type and coding, read the same
        whole and in pieces.
        """
        whole = read([body], contentType, encoding)
        self.assertEqual(read(pieces(data, body), contentType, encoding), whole)
        if contentType == SSE and encoding is None:
            self.assertEqual(whole, referenceUsage(body))

    @settings(max_examples=500, deadline=None)
    @given(
        st.sampled_from(sorted(RECORDED)),
        st.sampled_from(sorted(ENDINGS)),
        st.lists(mutation, max_size=6),
        st.sampled_from([60, 150, 300, MAX_EVENT_BYTES]),
        st.data(),
    )
    def test_mutatedStreams(
        self,
        name: str,
        ending: str,
        mutations: list[tuple[str, float, bytes]],
        eventLimit: int,
        data: st.DataObject,
    ) -> None:
        """
        A recorded stream, damaged, gives what a plain line-by-line reading
        gives, however it is cut.
        """
        stream = mutate(ENDINGS[ending](RECORDED[name][0]), mutations)
        expected = referenceUsage(stream, eventLimit)
        self.assertEqual(read([stream], eventLimit=eventLimit), expected)
        self.assertEqual(read(pieces(data, stream), eventLimit=eventLimit), expected)

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from(sorted(RECORDED)),
        st.lists(mutation, max_size=4),
        st.lists(mutation, max_size=2),
        st.data(),
    )
    def test_mutatedGzip(
        self,
        name: str,
        mutations: list[tuple[str, float, bytes]],
        damage: list[tuple[str, float, bytes]],
        data: st.DataObject,
    ) -> None:
        """
        A damaged stream, gzipped and perhaps damaged again, reads the same
        whole and in pieces; undamaged gzip reads like the plain stream.
        """
        stream = mutate(RECORDED[name][0], mutations)
        body = mutate(gzipped(stream), damage)
        whole = read([body], SSE, b"gzip")
        self.assertEqual(read(pieces(data, body), SSE, b"gzip"), whole)
        if not damage:
            self.assertEqual(whole, referenceUsage(stream))
