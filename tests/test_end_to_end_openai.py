"""
End to end through a running C{twistd -n ccrouter} to an OpenAI-format
mock upstream (a real HTTP server on 127.0.0.1): the official C{anthropic}
SDK is the client, and the C{openai} package's own types check what the
upstream was sent.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import anthropic
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from twisted.internet.threads import deferToThread

from tests.mockupstream import MockUpstream, respondEvents, respondJSON
from tests.test_end_to_end import EndToEndCase
from tests.test_translate_request import validateOpenAIRequest

PROVIDER_KEY = "sk-deepseek-OPENAI-CANARY-0c4e"
CLIENT_KEY = "sk-ant-api03-OPENAI-CLIENT-CANARY-8e2f"


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    document = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "deepseek-chat",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    ChatCompletionChunk.model_validate(document)
    return b"data: " + json.dumps(document).encode() + b"\n\n"


USAGE = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "deepseek-chat",
    "choices": [],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}
TEXT_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "The user greets me."}),
    chunk({"content": "Hello"}),
    chunk({"content": " from DeepSeek"}),
    chunk({}, "stop"),
    b"data: " + json.dumps(USAGE).encode() + b"\n\n",
    b"data: [DONE]\n\n",
]
TOOL_STREAM = [
    chunk({"role": "assistant", "content": "Let me look."}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"command": '}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"ls"}'}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "Read", "arguments": '{"path": "a"}'},
                }
            ]
        }
    ),
    chunk({}, "tool_calls"),
    b"data: [DONE]\n\n",
]
COMPLETION = {
    "id": "chatcmpl-2",
    "object": "chat.completion",
    "created": 1,
    "model": "deepseek-chat",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Plain answer"},
            "finish_reason": "length",
        }
    ],
    "usage": {
        "prompt_tokens": 30,
        "completion_tokens": 8,
        "total_tokens": 38,
        "prompt_tokens_details": {"cached_tokens": 10},
    },
}
TOOLS = [
    {
        "name": "Bash",
        "description": "Run a command",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
        },
    },
    {
        "name": "Read",
        "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
]


class OpenAICase(EndToEndCase):
    async def proxyFor(self, mock: MockUpstream) -> str:
        proxy = await self.proxy(
            f"""
default: {{url: "http://127.0.0.1:9"}}
upstreams:
  deepseek:
    url: "{mock.url}/v1"
    format: openai
    profile: deepseek
    auth: {{header: authorization, value: "Bearer ${{DEEPSEEK_KEY}}"}}
routes:
  - match: "claude-*"
    model: deepseek-chat
    upstream: deepseek
""",
            {"DEEPSEEK_KEY": PROVIDER_KEY},
        )
        assert proxy.url is not None
        return proxy.url

    def sent(self, mock: MockUpstream, index: int = 0) -> dict[str, Any]:
        recorded = mock.requests[index]
        self.assertEqual(recorded.uri, b"/v1/chat/completions")
        self.assertEqual(
            recorded.header(b"authorization"), [b"Bearer " + PROVIDER_KEY.encode()]
        )
        self.assertEqual(recorded.header(b"x-api-key"), [])
        self.assertEqual(recorded.header(b"anthropic-version"), [])
        body: dict[str, Any] = recorded.json()
        validateOpenAIRequest(self, body)
        return body


class TranslationTests(OpenAICase):
    async def test_streamingTextAndThinking(self) -> None:
        mock = self.upstream(respondEvents(TEXT_STREAM, spacing=0.002))
        url = await self.proxyFor(mock)

        def useSDK() -> Any:
            with anthropic.Anthropic(
                base_url=url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                with client.messages.stream(
                    model="claude-sonnet-4-5",
                    max_tokens=64000,
                    system="Be brief.",
                    messages=[{"role": "user", "content": "hi"}],
                    thinking={"type": "enabled", "budget_tokens": 2000},
                ) as stream:
                    text = "".join(stream.text_stream)
                    return text, stream.get_final_message()

        text, final = await deferToThread(useSDK)
        self.assertEqual(text, "Hello from DeepSeek")
        self.assertEqual(final.model, "claude-sonnet-4-5")
        self.assertEqual([block.type for block in final.content], ["thinking", "text"])
        self.assertEqual(final.content[0].thinking, "The user greets me.")
        self.assertTrue(final.content[0].signature.startswith("ccrouter-translated:"))
        self.assertEqual(final.stop_reason, "end_turn")
        self.assertEqual(final.usage.output_tokens, 5)
        sent = self.sent(mock)
        self.assertEqual(sent["model"], "deepseek-chat")
        self.assertTrue(sent["stream"])
        self.assertEqual(
            sent["messages"][0], {"role": "system", "content": "Be brief."}
        )
        self.assertNotIn("thinking", sent)

    async def test_parallelToolCalls(self) -> None:
        mock = self.upstream(respondEvents(TOOL_STREAM, spacing=0.002))
        url = await self.proxyFor(mock)

        def useSDK() -> Any:
            with anthropic.Anthropic(
                base_url=url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                with client.messages.stream(
                    model="claude-sonnet-4-5",
                    max_tokens=1024,
                    tools=TOOLS,
                    messages=[{"role": "user", "content": "look around"}],
                ) as stream:
                    return stream.get_final_message()

        final = await deferToThread(useSDK)
        self.assertEqual(
            [block.type for block in final.content], ["text", "tool_use", "tool_use"]
        )
        self.assertEqual(
            [(block.name, block.input) for block in final.content[1:]],
            [("Bash", {"command": "ls"}), ("Read", {"path": "a"})],
        )
        self.assertEqual(final.stop_reason, "tool_use")
        sent = self.sent(mock)
        self.assertEqual(
            [tool["function"]["name"] for tool in sent["tools"]], ["Bash", "Read"]
        )
        self.assertEqual(sent["tools"][0]["type"], "function")

    async def test_nonStreamingAndToolRoundTrip(self) -> None:
        """
        A non-streaming answer is translated whole; a conversation carrying
        a tool call and its result goes upstream as tool_calls and a tool
        message.
        """
        ChatCompletion.model_validate(COMPLETION)
        mock = self.upstream(respondJSON(COMPLETION))
        url = await self.proxyFor(mock)

        def useSDK() -> Any:
            with anthropic.Anthropic(
                base_url=url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                return client.messages.create(
                    model="claude-sonnet-4-5",
                    max_tokens=1024,
                    tools=TOOLS,
                    messages=[
                        {"role": "user", "content": "list files"},
                        {
                            "role": "assistant",
                            "content": [
                                {
                                    "type": "tool_use",
                                    "id": "toolu_1",
                                    "name": "Bash",
                                    "input": {"command": "ls"},
                                }
                            ],
                        },
                        {
                            "role": "user",
                            "content": [
                                {
                                    "type": "tool_result",
                                    "tool_use_id": "toolu_1",
                                    "content": "a.txt",
                                }
                            ],
                        },
                    ],
                )

        message = await deferToThread(useSDK)
        self.assertEqual(message.content[0].text, "Plain answer")
        self.assertEqual(message.stop_reason, "max_tokens")
        self.assertEqual(
            (message.usage.input_tokens, message.usage.cache_read_input_tokens),
            (20, 10),
        )
        sent = self.sent(mock)
        self.assertFalse(sent.get("stream", False))
        assistant, tool = sent["messages"][-2:]
        self.assertEqual(assistant["tool_calls"][0]["function"]["name"], "Bash")
        self.assertEqual(
            json.loads(assistant["tool_calls"][0]["function"]["arguments"]),
            {"command": "ls"},
        )
        self.assertEqual(tool["role"], "tool")
        self.assertEqual(tool["tool_call_id"], assistant["tool_calls"][0]["id"])

    async def test_errorsAndCountTokens(self) -> None:
        """
        A context-length error reads as Anthropic's "prompt is too long";
        count_tokens is estimated locally and says so.
        """
        mock = self.upstream(
            respondJSON(
                {
                    "error": {
                        "message": "This model's maximum context length is 65536"
                        " tokens. However, you requested 70000 tokens.",
                        "type": "invalid_request_error",
                        "code": "context_length_exceeded",
                    }
                },
                status=400,
            )
        )
        url = await self.proxyFor(mock)

        def useSDK() -> Any:
            with anthropic.Anthropic(
                base_url=url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                try:
                    client.messages.create(
                        model="claude-sonnet-4-5",
                        max_tokens=1024,
                        messages=[{"role": "user", "content": "x" * 100}],
                    )
                except anthropic.BadRequestError as e:
                    error = e
                counted = client.messages.with_raw_response.count_tokens(
                    model="claude-sonnet-4-5",
                    messages=[{"role": "user", "content": "word " * 400}],
                )
                return error, counted.headers, counted.parse()

        error, headers, counted = await deferToThread(useSDK)
        self.assertEqual(error.status_code, 400)
        message = error.body["error"]["message"]
        self.assertTrue(
            message.startswith("prompt is too long: 70000 tokens > 65536"), message
        )
        self.assertEqual(headers["x-ccrouter-token-count"], "estimate")
        self.assertGreater(counted.input_tokens, 400)
        self.assertLess(counted.input_tokens, 700)
        self.assertEqual(len(mock.requests), 1)


ERROR_STREAM = [
    chunk({"role": "assistant", "content": "Partial"}),
    b'data: {"error": {"message": "upstream overloaded", "type": "server_error",'
    b' "code": 529}}\n\n',
]


class StreamErrorTests(OpenAICase):
    async def test_errorMidStream(self) -> None:
        """
        F7: a provider error inside the stream reaches the SDK as Anthropic's
        error event, after the text it had sent.
        """
        mock = self.upstream(respondEvents(ERROR_STREAM, spacing=0.002))
        url = await self.proxyFor(mock)

        def useSDK() -> Any:
            received = []
            with anthropic.Anthropic(
                base_url=url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                try:
                    with client.messages.stream(
                        model="claude-sonnet-4-5",
                        max_tokens=1024,
                        messages=[{"role": "user", "content": "hi"}],
                    ) as stream:
                        for text in stream.text_stream:
                            received.append(text)
                except anthropic.APIStatusError as e:
                    return received, e
            return received, None

        received, error = await deferToThread(useSDK)
        self.assertEqual(received, ["Partial"])
        self.assertIsNotNone(error)
        self.assertIn("upstream overloaded", str(error))


def respondGzipped(body: bytes, contentType: bytes) -> Any:
    def behaviour(request: Any) -> bytes:
        request.setHeader(b"content-type", contentType)
        request.setHeader(b"content-encoding", b"gzip")
        return gzip.compress(body)

    return behaviour


class CompressedAnswerTests(OpenAICase):
    async def test_gzippedAnswersAreRead(self) -> None:
        """
        An upstream that compresses although asked for identity still gets
        its stream and its whole answers translated (pitfall P15).
        """
        mock = self.upstream(
            respondGzipped(b"".join(TEXT_STREAM), b"text/event-stream")
        )
        url = await self.proxyFor(mock)

        def stream() -> Any:
            with anthropic.Anthropic(
                base_url=url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                with client.messages.stream(
                    model="claude-sonnet-4-5",
                    max_tokens=100,
                    messages=[{"role": "user", "content": "hi"}],
                ) as events:
                    return "".join(events.text_stream)

        self.assertEqual(await deferToThread(stream), "Hello from DeepSeek")
        self.assertEqual(mock.requests[0].header(b"accept-encoding"), [b"identity"])
        mock.behaviour = respondGzipped(
            json.dumps(COMPLETION).encode(), b"application/json"
        )

        def whole() -> Any:
            with anthropic.Anthropic(
                base_url=url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                return client.messages.create(
                    model="claude-sonnet-4-5",
                    max_tokens=100,
                    messages=[{"role": "user", "content": "hi"}],
                )

        self.assertEqual((await deferToThread(whole)).content[0].text, "Plain answer")


SINGLE_TOOL_STREAM = [
    chunk({"role": "assistant"}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_only",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": '{"comm'},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'and": "pwd"}'}}]}),
    chunk({}, "tool_calls"),
    b"data: [DONE]\n\n",
]


class SingleToolTests(OpenAICase):
    async def test_oneToolCall(self) -> None:
        mock = self.upstream(respondEvents(SINGLE_TOOL_STREAM, spacing=0.002))
        url = await self.proxyFor(mock)

        def useSDK() -> Any:
            with anthropic.Anthropic(
                base_url=url, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                with client.messages.stream(
                    model="claude-sonnet-4-5",
                    max_tokens=100,
                    tools=TOOLS,
                    messages=[{"role": "user", "content": "where am I"}],
                ) as stream:
                    return stream.get_final_message()

        final = await deferToThread(useSDK)
        [block] = final.content
        self.assertEqual(
            (block.type, block.name, block.input),
            ("tool_use", "Bash", {"command": "pwd"}),
        )
        self.assertTrue(block.id.startswith(("toolu_", "call_")), block.id)
        self.assertEqual(final.stop_reason, "tool_use")
