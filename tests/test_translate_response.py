"""
Tests for L{ccrouter.translate.response}: golden OpenAI -> Anthropic
translations of non-streaming responses and errors, the clean-up of fake
thinking, and the pitfalls of protocol.md section 7.9 that concern them.
No reactor.

Every message produced is also validated with the C{anthropic} package's
C{Message} model.
"""

from __future__ import annotations

import json
from typing import Any

from anthropic.types import Message
from twisted.trial.unittest import SynchronousTestCase

from ccrouter.translate.profiles import PROFILES, Profile
from ccrouter.translate.request import ToolNames, shortenToolName
from ccrouter.translate.response import (
    FAKE_SIGNATURE_PREFIX,
    UNPARSED_ARGUMENTS_KEY,
    anthropicUsage,
    errorFromPayload,
    fakeSignature,
    isFakeSignature,
    messageId,
    parseArguments,
    promptTooLong,
    stopReason,
    stripFakeThinking,
    toolUseId,
    translateError,
    translateResponse,
)

GENERIC = PROFILES["generic"]


def completion(
    message: dict[str, Any],
    finishReason: str | None = "stop",
    usage: Any = None,
    **choice: Any,
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9x",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "upstream-model",
        "choices": [
            {
                "index": 0,
                "finish_reason": finishReason,
                "message": {"role": "assistant", **message},
                **choice,
            }
        ],
        "usage": usage,
    }


class ResponseTestCase(SynchronousTestCase):
    def translate(
        self,
        body: dict[str, Any],
        toolNames: ToolNames | None = None,
        profile: Profile = GENERIC,
    ) -> dict[str, Any]:
        result = translateResponse(
            body, "claude-sonnet-4-5", toolNames or ToolNames(), profile
        )
        Message.model_validate(result)
        json.dumps(result)
        return result


class GoldenResponseTests(ResponseTestCase):
    def test_toolCallExample(self) -> None:
        """
        The example of protocol.md 6.2 becomes the Anthropic message of
        section 2: the client's model name, a C{tool_use} block with parsed
        input, C{tool_use}, and cached tokens out of C{input_tokens}.
        """
        body = completion(
            {
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location":"Paris"}',
                        },
                    }
                ],
            },
            "tool_calls",
            {
                "prompt_tokens": 412,
                "completion_tokens": 18,
                "total_tokens": 430,
                "prompt_tokens_details": {"cached_tokens": 384},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        )
        self.assertEqual(
            self.translate(body),
            {
                "id": messageId("chatcmpl-9x"),
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_abc",
                        "name": "get_weather",
                        "input": {"location": "Paris"},
                    }
                ],
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 28,
                    "output_tokens": 18,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 384,
                },
            },
        )

    def test_text(self) -> None:
        result = self.translate(
            completion(
                {"content": "Hello, world!"},
                usage={"prompt_tokens": 21, "completion_tokens": 4},
            )
        )
        self.assertEqual(result["content"], [{"type": "text", "text": "Hello, world!"}])
        self.assertEqual(result["stop_reason"], "end_turn")
        self.assertEqual(result["usage"]["input_tokens"], 21)

    def test_stableId(self) -> None:
        """
        The message id is derived from the upstream id: stable, C{msg_}.
        """
        first = self.translate(completion({"content": "a"}))["id"]
        self.assertEqual(first, self.translate(completion({"content": "b"}))["id"])
        self.assertRegex(first, r"^msg_[0-9a-f]{24}$")
        body = completion({"content": "a"})
        del body["id"]
        self.assertEqual(self.translate(body)["id"], self.translate(body)["id"])

    def test_contentParts(self) -> None:
        """
        Content sent as text parts is joined.
        """
        result = self.translate(
            completion(
                {
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "text", "text": "b"},
                    ]
                }
            )
        )
        self.assertEqual(result["content"], [{"type": "text", "text": "ab"}])

    def test_emptyResponse(self) -> None:
        """
        P18 (empty text blocks): no content means no block, never an empty
        text block; a body without choices still gives a valid message.
        """
        self.assertEqual(self.translate(completion({"content": ""}))["content"], [])
        result = self.translate({"id": "x", "choices": []})
        self.assertEqual(result["content"], [])
        self.assertEqual(result["stop_reason"], "end_turn")


class ThinkingResponseTests(ResponseTestCase):
    def test_reasoningContentFirst(self) -> None:
        """
        P7 (reasoning not turned into thinking) and P22 (thinking appended
        after text): reasoning becomes a thinking block before the text and
        the tool call, with a fake signature.
        """
        result = self.translate(
            completion(
                {
                    "content": "Checking.",
                    "reasoning_content": "The user wants weather.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                "tool_calls",
            ),
            profile=PROFILES["deepseek"],
        )
        self.assertEqual(
            [block["type"] for block in result["content"]],
            ["thinking", "text", "tool_use"],
        )
        thinking = result["content"][0]
        self.assertEqual(thinking["thinking"], "The user wants weather.")
        self.assertTrue(isFakeSignature(thinking["signature"]))
        self.assertEqual(
            thinking["signature"], fakeSignature("The user wants weather.")
        )

    def test_reasoningField(self) -> None:
        """
        The profile says which fields carry reasoning (vLLM/OpenRouter
        C{reasoning}); others are ignored.
        """
        body = completion({"content": "A", "reasoning": "why"})
        self.assertEqual(
            self.translate(body, profile=PROFILES["vllm"])["content"][0]["thinking"],
            "why",
        )
        self.assertEqual(
            [
                block["type"]
                for block in self.translate(body, profile=PROFILES["deepseek"])[
                    "content"
                ]
            ],
            ["text"],
        )

    def test_thinkTags(self) -> None:
        """
        Reasoning embedded in content as C{<think>...</think>} (protocol.md
        6.5) becomes a thinking block.
        """
        result = self.translate(
            completion({"content": "<think>\nhmm\n</think>\n\nAnswer"})
        )
        self.assertEqual(
            [(b["type"], b.get("thinking", b.get("text"))) for b in result["content"]],
            [("thinking", "hmm"), ("text", "Answer")],
        )

    def test_signatures(self) -> None:
        """
        P8 (fabricated/empty signatures): fake signatures are never empty and
        carry the prefix; real ones are not mistaken for fakes.
        """
        self.assertTrue(fakeSignature("").startswith(FAKE_SIGNATURE_PREFIX))
        self.assertGreater(len(fakeSignature("")), len(FAKE_SIGNATURE_PREFIX))
        self.assertTrue(isFakeSignature(FAKE_SIGNATURE_PREFIX + "x"))
        self.assertFalse(isFakeSignature("EqQBCkgIARABGAIiQL"))
        self.assertFalse(isFakeSignature(None))
        self.assertFalse(isFakeSignature(""))


class ToolUseResponseTests(ResponseTestCase):
    def call(self, callId: Any, name: str, arguments: Any) -> dict[str, Any]:
        return {
            "id": callId,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    def test_parallelCalls(self) -> None:
        """
        Each call is its own block, in order.
        """
        result = self.translate(
            completion(
                {
                    "content": None,
                    "tool_calls": [
                        self.call("call_A", "get_weather", '{"location":"Paris"}'),
                        self.call("call_B", "get_time", '{"tz":"CET"}'),
                    ],
                },
                "tool_calls",
            )
        )
        self.assertEqual(
            [(b["id"], b["name"], b["input"]) for b in result["content"]],
            [
                ("call_A", "get_weather", {"location": "Paris"}),
                ("call_B", "get_time", {"tz": "CET"}),
            ],
        )

    def test_originalNames(self) -> None:
        """
        P12 (long tool names): shortened names map back to the client's.
        """
        long = "mcp__server__" + "x" * 80
        names = ToolNames.fromNames([long, "Bash"])
        result = self.translate(
            completion(
                {
                    "tool_calls": [
                        self.call("c1", shortenToolName(long, 64), "{}"),
                        self.call("c2", "Bash", "{}"),
                    ]
                },
                "tool_calls",
            ),
            names,
        )
        self.assertEqual([b["name"] for b in result["content"]], [long, "Bash"])

    def test_toolIds(self) -> None:
        """
        P13 (tool-call ids invalid for the next upstream): Kimi's
        C{functions.Bash:0} is normalised, a missing id is generated
        (C{toolu_}, stable), valid ids are kept.
        """
        result = self.translate(
            completion(
                {
                    "tool_calls": [
                        self.call("functions.Bash:0", "Bash", "{}"),
                        self.call(None, "Bash", "{}"),
                        self.call("", "Bash", "{}"),
                    ]
                },
                "tool_calls",
            )
        )
        ids = [b["id"] for b in result["content"]]
        self.assertEqual(ids[0], "functions_Bash_0")
        self.assertRegex(ids[1], r"^toolu_[0-9a-f]{24}$")
        self.assertRegex(ids[2], r"^toolu_[0-9a-f]{24}$")
        self.assertNotEqual(ids[1], ids[2])
        self.assertEqual(toolUseId("call_ok-1", "s"), "call_ok-1")
        self.assertEqual(toolUseId(None, "s"), toolUseId(None, "s"))

    def test_invalidArguments(self) -> None:
        """
        P4/P5 (tool arguments lost or concatenated into invalid JSON): broken
        arguments are kept whole under a key no schema has, so the call fails
        visibly instead of running with C{{}}; empty arguments are C{{}};
        objects pass.
        """
        concatenated = '{"location":"Paris"}{"tz":"CET"}'
        self.assertEqual(
            parseArguments(concatenated), {UNPARSED_ARGUMENTS_KEY: concatenated}
        )
        self.assertEqual(parseArguments('{"a": '), {UNPARSED_ARGUMENTS_KEY: '{"a": '})
        self.assertEqual(parseArguments("[1]"), {UNPARSED_ARGUMENTS_KEY: "[1]"})
        self.assertEqual(parseArguments(""), {})
        self.assertEqual(parseArguments(None), {})
        self.assertEqual(parseArguments({"a": 1}), {"a": 1})
        result = self.translate(
            completion(
                {"tool_calls": [self.call("c", "f", concatenated)]}, "tool_calls"
            )
        )
        self.assertEqual(
            result["content"][0]["input"], {UNPARSED_ARGUMENTS_KEY: concatenated}
        )


class StopReasonTests(ResponseTestCase):
    def test_mapping(self) -> None:
        """
        protocol.md 7.4, and P21 (no invented C{stop_reason: "error"}).
        """
        cases = [
            ("stop", False, "end_turn"),
            ("length", False, "max_tokens"),
            ("tool_calls", True, "tool_use"),
            ("function_call", True, "tool_use"),
            ("content_filter", False, "refusal"),
            (None, False, "end_turn"),
            ("weird", False, "end_turn"),
            ("tool_calls", False, "end_turn"),
        ]
        for finish, hasTools, expected in cases:
            self.assertEqual(stopReason(finish, hasTools), expected, finish)

    def test_stopWithToolCalls(self) -> None:
        """
        P6 (Gemini ends tool turns with C{finish_reason: "stop"}): a turn
        with tool calls is C{tool_use}.
        """
        result = self.translate(
            completion(
                {
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ]
                },
                "stop",
            )
        )
        self.assertEqual(result["stop_reason"], "tool_use")

    def test_contentFilter(self) -> None:
        """
        P22 (C{content_filter} mapped to C{stop_sequence}): it is a refusal;
        a C{refusal} text becomes the text.
        """
        result = self.translate(
            completion({"content": None, "refusal": "I can't."}, "content_filter")
        )
        self.assertEqual(result["stop_reason"], "refusal")
        self.assertEqual(result["content"], [{"type": "text", "text": "I can't."}])
        self.assertIsNone(result["stop_sequence"])
        result = self.translate(completion({"content": None, "refusal": "No."}))
        self.assertEqual(result["stop_reason"], "refusal")

    def test_maxTokens(self) -> None:
        result = self.translate(completion({"content": "trunc"}, "length"))
        self.assertEqual(result["stop_reason"], "max_tokens")

    def test_stopSequence(self) -> None:
        """
        Servers that say which stop string matched (vLLM C{stop_reason},
        SGLang C{matched_stop}) give C{stop_sequence}; numeric token ids and
        plain OpenAI C{stop} give C{end_turn}.
        """
        result = self.translate(completion({"content": "a"}, stop_reason="END"))
        self.assertEqual(
            (result["stop_reason"], result["stop_sequence"]), ("stop_sequence", "END")
        )
        result = self.translate(completion({"content": "a"}, matched_stop="###"))
        self.assertEqual(result["stop_sequence"], "###")
        result = self.translate(completion({"content": "a"}, stop_reason=128001))
        self.assertEqual(
            (result["stop_reason"], result["stop_sequence"]), ("end_turn", None)
        )


class UsageTests(SynchronousTestCase):
    """
    P10 (C{prompt_tokens} includes cached tokens): protocol.md 7.5.
    """

    def test_openai(self) -> None:
        self.assertEqual(
            anthropicUsage(
                {
                    "prompt_tokens": 1000,
                    "completion_tokens": 50,
                    "prompt_tokens_details": {
                        "cached_tokens": 600,
                        "cache_write_tokens": 100,
                    },
                    "completion_tokens_details": {"reasoning_tokens": 20},
                }
            ),
            {
                "input_tokens": 300,
                "output_tokens": 50,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 600,
            },
        )

    def test_deepseek(self) -> None:
        """
        DeepSeek reports cache hits as C{prompt_cache_hit_tokens}.
        """
        self.assertEqual(
            anthropicUsage(
                {
                    "prompt_tokens": 1000,
                    "completion_tokens": 5,
                    "prompt_cache_hit_tokens": 900,
                    "prompt_cache_miss_tokens": 100,
                }
            )["input_tokens"],
            100,
        )

    def test_missingOrOdd(self) -> None:
        zero = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        self.assertEqual(anthropicUsage(None), zero)
        self.assertEqual(anthropicUsage({"prompt_tokens": "x"}), zero)
        self.assertEqual(
            anthropicUsage(
                {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}
            )["input_tokens"],
            0,
        )


class ErrorTests(SynchronousTestCase):
    """
    protocol.md 7.8, and P22 (errors under the C{error} key).
    """

    def translated(
        self, status: int, body: Any, retryAfter: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        newStatus, newBody = translateError(status, raw, retryAfter)
        document = json.loads(newBody)
        self.assertEqual(document["type"], "error")
        self.assertEqual(set(document["error"]), {"type", "message"})
        return newStatus, document["error"]

    def openai(self, message: str, kind: str = "", code: Any = None) -> Any:
        return {
            "error": {"message": message, "type": kind, "param": None, "code": code}
        }

    def test_statuses(self) -> None:
        cases = {
            400: (400, "invalid_request_error"),
            401: (401, "authentication_error"),
            402: (402, "billing_error"),
            403: (403, "permission_error"),
            404: (404, "not_found_error"),
            408: (504, "timeout_error"),
            409: (409, "invalid_request_error"),
            413: (413, "request_too_large"),
            422: (400, "invalid_request_error"),
            429: (429, "rate_limit_error"),
            500: (500, "api_error"),
            502: (502, "api_error"),
            503: (529, "overloaded_error"),
            504: (504, "timeout_error"),
            529: (529, "overloaded_error"),
        }
        for status, (expectedStatus, expectedType) in cases.items():
            newStatus, error = self.translated(status, self.openai("boom"))
            self.assertEqual((newStatus, error["type"]), (expectedStatus, expectedType))
            self.assertEqual(error["message"], "boom")

    def test_rateLimit(self) -> None:
        """
        A 429 keeps its message and names the retry-after the caller passes
        on.
        """
        status, error = self.translated(
            429,
            self.openai("Rate limit reached", "requests", "rate_limit_exceeded"),
            "7",
        )
        self.assertEqual(status, 429)
        self.assertEqual(error["type"], "rate_limit_error")
        self.assertEqual(error["message"], "Rate limit reached (retry-after: 7)")

    def test_contextLengthOpenAI(self) -> None:
        """
        OpenAI's context error becomes Claude Code's wording with both
        numbers, the original kept.
        """
        message = (
            "This model's maximum context length is 128000 tokens. However, your "
            "messages resulted in 130532 tokens. Please reduce the length of the "
            "messages."
        )
        status, error = self.translated(
            400,
            self.openai(message, "invalid_request_error", "context_length_exceeded"),
        )
        self.assertEqual(status, 400)
        self.assertEqual(error["type"], "invalid_request_error")
        self.assertEqual(
            error["message"],
            f"prompt is too long: 130532 tokens > 128000 maximum ({message})",
        )

    def test_contextLengthVariants(self) -> None:
        """
        vLLM/DeepSeek, Mistral and Moonshot wordings are recognised; the
        numbers are read where they can be.
        """
        cases = [
            (
                "This model's maximum context length is 65536 tokens. However, you "
                "requested 70000 tokens (66000 in the messages, 4000 in the "
                "completion).",
                "prompt is too long: 70000 tokens > 65536 maximum (",
            ),
            (
                "Prompt contains 40000 tokens, too large for model with 32768 "
                "maximum context length",
                "prompt is too long: 40000 tokens > 32768 maximum (",
            ),
            (
                "Invalid request: Your request exceeded model token limit: 131,072 "
                "(requested: 140,000)",
                "prompt is too long: 140000 tokens > 131072 maximum (",
            ),
            (
                "This model's maximum context length is 32768 tokens. However, your "
                "request has 40000 input tokens.",
                "prompt is too long: 40000 tokens > 32768 maximum (",
            ),
            ("Input is too long for requested model.", "prompt is too long: Input"),
        ]
        for message, prefix in cases:
            status, error = self.translated(
                400, {"object": "error", "message": message}
            )
            self.assertEqual(status, 400)
            self.assertTrue(error["message"].startswith(prefix), error["message"])
            self.assertIn(message, error["message"])

    def test_contextLengthByCode(self) -> None:
        """
        The C{context_length_exceeded} code is enough, whatever the status
        and wording; without numbers the original follows the prefix.
        """
        status, error = self.translated(
            413, self.openai("Too big.", code="context_length_exceeded")
        )
        self.assertEqual((status, error["type"]), (400, "invalid_request_error"))
        self.assertEqual(error["message"], "prompt is too long: Too big.")

    def test_notContextLength(self) -> None:
        """
        A C{max_tokens} range error, or a tokens-per-minute rate limit, is
        not a context overflow.
        """
        message = "Invalid max_tokens value, the valid range of max_tokens is [1, 8192]"
        status, error = self.translated(400, self.openai(message))
        self.assertEqual(error["message"], message)
        status, error = self.translated(
            429, self.openai("Request too large: too many tokens per minute (TPM)")
        )
        self.assertEqual((status, error["type"]), (429, "rate_limit_error"))

    def test_promptTooLongPassesThrough(self) -> None:
        message = "prompt is too long: 210000 tokens > 200000 maximum"
        self.assertEqual(promptTooLong(message), message)

    def test_dialects(self) -> None:
        """
        Ollama's bare string, FastAPI's C{detail}, Gemini's list, plain text,
        an empty body, and OpenRouter's provider error in C{metadata.raw}.
        """
        cases: list[tuple[Any, str]] = [
            ({"error": "model 'x' not found"}, "model 'x' not found"),
            ({"detail": "Not Found"}, "Not Found"),
            ([{"error": {"code": 404, "message": "no model"}}], "no model"),
            (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
            (b"", "upstream answered HTTP 404"),
            (
                {
                    "error": {
                        "message": "Provider returned error",
                        "code": 404,
                        "metadata": {"raw": "model gone", "provider_name": "P"},
                    }
                },
                "Provider returned error: model gone",
            ),
        ]
        for body, message in cases:
            status, error = self.translated(404, body)
            self.assertEqual((status, error["message"]), (404, message))

    def test_anthropicPassesThrough(self) -> None:
        """
        An error already in Anthropic's shape is passed on unchanged.
        """
        body = (
            b'{"type":"error","error":{"type":"overloaded_error",'
            b'"message":"Overloaded"},"request_id":"req_1"}'
        )
        self.assertEqual(translateError(529, body, None), (529, body))

    def test_streamErrorPayload(self) -> None:
        """
        An error chunk inside a 200 stream takes its status from its numeric
        code or its type, and renders as an SSE C{error} event with the
        C{error} key (P22).
        """
        error = errorFromPayload(200, {"error": {"message": "slow", "code": 429}})
        self.assertEqual((error.status, error.type), (429, "rate_limit_error"))
        error = errorFromPayload(
            200, {"error": {"message": "oops", "type": "server_error"}}
        )
        self.assertEqual((error.status, error.type), (500, "api_error"))
        event = error.event()
        self.assertTrue(event.startswith(b"event: error\ndata: "))
        self.assertEqual(
            json.loads(event.split(b"data: ", 1)[1])["error"],
            {"type": "api_error", "message": "oops"},
        )
        error = errorFromPayload(200, {"error": {"message": "?"}})
        self.assertEqual((error.status, error.type), (500, "api_error"))
        error = errorFromPayload(200, {"error": {"message": "z", "code": "1302"}})
        self.assertEqual((error.status, error.type), (500, "api_error"))


class StripFakeThinkingTests(SynchronousTestCase):
    """
    P8 (fabricated signatures rejected after a provider switch).
    """

    FAKE = {"type": "thinking", "thinking": "t", "signature": fakeSignature("t")}
    REAL = {"type": "thinking", "thinking": "r", "signature": "EqQBCkgIARAB"}

    def test_stripsOnlyFakes(self) -> None:
        """
        Fake thinking goes, real thinking and redacted thinking stay; the
        input is not modified.
        """
        body = {
            "model": "claude-sonnet-4-5",
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "messages": [
                {"role": "user", "content": "Q"},
                {
                    "role": "assistant",
                    "content": [self.FAKE, {"type": "text", "text": "A"}],
                },
                {"role": "user", "content": "Q2"},
                {
                    "role": "assistant",
                    "content": [
                        self.REAL,
                        {"type": "redacted_thinking", "data": "x"},
                        {"type": "text", "text": "B"},
                    ],
                },
                {"role": "user", "content": "Q3"},
            ],
        }
        original = json.loads(json.dumps(body))
        cleaned = stripFakeThinking(body)
        self.assertEqual(body, original)
        self.assertEqual(
            cleaned["messages"][1]["content"], [{"type": "text", "text": "A"}]
        )
        self.assertEqual(cleaned["messages"][3], body["messages"][3])
        self.assertEqual(cleaned["thinking"], body["thinking"])

    def test_emptyTurnDropped(self) -> None:
        body = {
            "messages": [
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": [self.FAKE]},
                {"role": "user", "content": "Q2"},
            ]
        }
        self.assertEqual(
            [m["content"] for m in stripFakeThinking(body)["messages"]], ["Q", "Q2"]
        )

    def test_toolLoopDisablesThinking(self) -> None:
        """
        When the turn the current tool loop continues lost its thinking,
        Anthropic would require a thinking block there: thinking (and its
        C{clear_thinking} edit) is switched off for this request.
        """
        body = {
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "context_management": {
                "edits": [
                    {"type": "clear_thinking_20251015", "keep": "all"},
                    {"type": "clear_tool_uses_20250919"},
                ]
            },
            "messages": [
                {"role": "user", "content": "Q"},
                {
                    "role": "assistant",
                    "content": [
                        self.FAKE,
                        {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t"}],
                },
            ],
        }
        cleaned = stripFakeThinking(body)
        self.assertNotIn("thinking", cleaned)
        self.assertEqual(
            cleaned["context_management"],
            {"edits": [{"type": "clear_tool_uses_20250919"}]},
        )
        self.assertEqual(
            cleaned["messages"][1]["content"],
            [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        )
        self.assertIn("thinking", body)

    def test_nothingToStrip(self) -> None:
        body = {"messages": [{"role": "user", "content": "Q"}], "thinking": {}}
        self.assertEqual(stripFakeThinking(body), body)
        self.assertEqual(stripFakeThinking({"model": "m"}), {"model": "m"})
