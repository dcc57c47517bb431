"""
Tests for L{ccrouter.translate.request} and L{ccrouter.translate.profiles}:
golden Anthropic -> OpenAI request translations, and the pitfalls of
protocol.md section 7.9 that concern requests.  No reactor.

Where the C{openai} package is installed, every body produced here is also
checked against its request C{TypedDict}s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.translate.profiles import (
    COMPAT_PROFILES,
    PROFILES,
    AnthropicCompat,
    Profile,
    applyCompat,
    betaFamily,
    withoutField,
)
from ccrouter.translate.request import (
    MISSING_RESULT,
    ToolNames,
    TranslatedRequest,
    effortForBudget,
    shortenToolName,
    translateRequest,
)

try:
    import pydantic
    from openai.types.chat import completion_create_params
except ImportError:  # pragma: no cover - the test extra installs both
    completion_create_params = None  # type: ignore[assignment]

GENERIC = PROFILES["generic"]

#: Fields that are not in OpenAI's own request type but that a profile sends
#: on purpose: OpenRouter's reasoning object, DeepSeek's reasoning_content.
_EXTENSIONS = frozenset({"reasoning"})
_MESSAGE_EXTENSIONS = frozenset({"reasoning_content"})


def _keysOf(typedDict: Any) -> frozenset[str]:
    return frozenset(typedDict.__required_keys__ | typedDict.__optional_keys__)


def validateOpenAIRequest(case: SynchronousTestCase, body: Mapping[str, Any]) -> None:
    """
    Check C{body} against the C{openai} package's request types: every
    top-level and message field must be one OpenAI defines (or one of our
    deliberate extensions), and the values must validate.
    """
    if completion_create_params is None:  # pragma: no cover
        return
    params = completion_create_params
    requestType = (
        params.CompletionCreateParamsStreaming
        if body.get("stream")
        else params.CompletionCreateParamsNonStreaming
    )
    unknown = set(body) - _keysOf(requestType) - _EXTENSIONS
    case.assertEqual(unknown, set(), "fields OpenAI does not define")
    from openai.types import chat

    messageTypes = {
        "system": chat.ChatCompletionSystemMessageParam,
        "user": chat.ChatCompletionUserMessageParam,
        "assistant": chat.ChatCompletionAssistantMessageParam,
        "tool": chat.ChatCompletionToolMessageParam,
    }
    for message in body["messages"]:
        known = _keysOf(messageTypes[message["role"]]) | _MESSAGE_EXTENSIONS
        case.assertEqual(set(message) - known, set(), message)
    pydantic.TypeAdapter(requestType).validate_python(dict(body))


def translate(
    body: Mapping[str, Any], profile: Profile = GENERIC, model: str = "up-model"
) -> TranslatedRequest:
    return translateRequest(body, model, profile)


def _user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def _assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get weather",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


class GoldenRequestTests(SynchronousTestCase):
    """
    Whole requests, compared with the exact body sent upstream.
    """

    def check(
        self, body: Mapping[str, Any], expected: Mapping[str, Any], **kw: Any
    ) -> TranslatedRequest:
        translated = translate(body, **kw)
        self.assertEqual(translated.body, expected)
        validateOpenAIRequest(self, translated.body)
        return translated

    def test_claudeCodeTurn(self) -> None:
        """
        The example turn of protocol.md 1.6: billing header dropped, system
        blocks joined, tool_use as tool_calls, tool_result as a tool message
        before the user's text, tools converted, stream with usage, and every
        Anthropic-only field (metadata, thinking with a generic profile,
        context_management, output_config, cache_control) left behind.
        """
        body = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 32000,
            "stream": True,
            "system": [
                {
                    "type": "text",
                    "text": "x-anthropic-billing-header: cc_version=2.1.240.abc;",
                },
                {
                    "type": "text",
                    "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "Be brief."},
            ],
            "messages": [
                _user([{"type": "text", "text": "What is the weather in Paris?"}]),
                _assistant(
                    [
                        {"type": "text", "text": "I'll check."},
                        {
                            "type": "tool_use",
                            "id": "toolu_01A",
                            "name": "get_weather",
                            "input": {"location": "Paris"},
                        },
                    ]
                ),
                _user(
                    [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_01A",
                            "content": "18°C, clear",
                        },
                        {
                            "type": "text",
                            "text": "Thanks",
                            "cache_control": {"type": "ephemeral"},
                        },
                    ]
                ),
            ],
            "tools": [{**WEATHER_TOOL, "cache_control": {"type": "ephemeral"}}],
            "metadata": {"user_id": "user_" + "a" * 64 + "_account__session_x"},
            "thinking": {"type": "adaptive"},
            "context_management": {"edits": []},
            "output_config": {"effort": "high"},
        }
        self.check(
            body,
            {
                "model": "up-model",
                "messages": [
                    {
                        "role": "system",
                        "content": "You are Claude Code.\n\nBe brief.",
                    },
                    {"role": "user", "content": "What is the weather in Paris?"},
                    {
                        "role": "assistant",
                        "content": "I'll check.",
                        "tool_calls": [
                            {
                                "id": "toolu_01A",
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": '{"location": "Paris"}',
                                },
                            }
                        ],
                    },
                    {
                        "role": "tool",
                        "tool_call_id": "toolu_01A",
                        "content": "18°C, clear",
                    },
                    {"role": "user", "content": "Thanks"},
                ],
                "max_tokens": 32000,
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "description": "Get weather",
                            "parameters": WEATHER_TOOL["input_schema"],
                        },
                    }
                ],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )

    def test_nonStreamingMinimal(self) -> None:
        """
        A string system prompt and string contents; no C{stream} means no
        C{stream} and no C{stream_options}.
        """
        translated = self.check(
            {
                "model": "claude-haiku-4-5",
                "max_tokens": 100,
                "system": "Be nice.",
                "messages": [_user("Hi"), _assistant("Hello"), _user("Bye")],
            },
            {
                "model": "up-model",
                "messages": [
                    {"role": "system", "content": "Be nice."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "Bye"},
                ],
                "max_tokens": 100,
            },
        )
        self.assertFalse(translated.streaming)

    def test_samplingAndStops(self) -> None:
        """
        C{temperature} and C{top_p} cross, C{top_k} does not,
        C{stop_sequences} become C{stop}.
        """
        self.check(
            {
                "max_tokens": 10,
                "messages": [_user("Hi")],
                "temperature": 0.2,
                "top_p": 0.9,
                "top_k": 40,
                "stop_sequences": ["END", "STOP"],
            },
            {
                "model": "up-model",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 10,
                "temperature": 0.2,
                "top_p": 0.9,
                "stop": ["END", "STOP"],
            },
        )

    def test_atMostFourStops(self) -> None:
        """
        OpenAI accepts four stop sequences; the rest are left out with a note.
        """
        translated = translate(
            {"messages": [_user("Hi")], "stop_sequences": list("abcdef")}
        )
        self.assertEqual(translated.body["stop"], list("abcd"))
        self.assertTrue(translated.notes)


class ContentTests(SynchronousTestCase):
    """
    User content blocks: text, images, documents.
    """

    def userContent(self, blocks: list[Any], profile: Profile = GENERIC) -> Any:
        translated = translate({"messages": [_user(blocks)]}, profile)
        validateOpenAIRequest(self, translated.body)
        [message] = translated.body["messages"]
        self.assertEqual(message["role"], "user")
        return message["content"]

    def test_images(self) -> None:
        """
        A base64 image becomes a data URL, a URL image its URL; text next to
        images stays a part.
        """
        self.assertEqual(
            self.userContent(
                [
                    {"type": "text", "text": "Look"},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": "iVBORw0KGgo=",
                        },
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://e.test/a.jpg"},
                    },
                ]
            ),
            [
                {"type": "text", "text": "Look"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                },
                {"type": "image_url", "image_url": {"url": "https://e.test/a.jpg"}},
            ],
        )

    def test_textOnlyIsAString(self) -> None:
        """
        A user turn of text blocks only is sent as one string (several
        servers take only strings), blocks joined by blank lines.
        """
        self.assertEqual(
            self.userContent(
                [{"type": "text", "text": "<reminder/>"}, {"type": "text", "text": "Q"}]
            ),
            "<reminder/>\n\nQ",
        )

    def test_textDocument(self) -> None:
        """
        A plain text document is text, under its title.
        """
        self.assertEqual(
            self.userContent(
                [
                    {
                        "type": "document",
                        "title": "notes.txt",
                        "source": {
                            "type": "text",
                            "media_type": "text/plain",
                            "data": "line one",
                        },
                    }
                ]
            ),
            "notes.txt\n\nline one",
        )

    def test_contentDocument(self) -> None:
        """
        A document of content blocks contributes those blocks.
        """
        self.assertEqual(
            self.userContent(
                [
                    {
                        "type": "document",
                        "source": {
                            "type": "content",
                            "content": [{"type": "text", "text": "inner"}],
                        },
                    }
                ]
            ),
            "inner",
        )

    def test_pdfPlaceholder(self) -> None:
        """
        An upstream that does not read files gets a placeholder saying the
        PDF was left out, and a note says so.
        """
        blocks = [
            {
                "type": "document",
                "title": "spec.pdf",
                "source": {
                    "type": "base64",
                    "media_type": "application/pdf",
                    "data": "JVBERi0=",
                },
            }
        ]
        translated = translate({"messages": [_user(blocks)]})
        content = translated.body["messages"][0]["content"]
        self.assertIn("'spec.pdf'", content)
        self.assertIn("left out", content)
        self.assertIn("application/pdf", content)
        self.assertTrue(translated.notes)

    def test_pdfAsFile(self) -> None:
        """
        An upstream that reads files (OpenAI, OpenRouter) gets a C{file} part
        with a data URL (protocol.md 7.2).
        """
        blocks = [
            {
                "type": "document",
                "title": "spec.pdf",
                "source": {
                    "type": "base64",
                    "media_type": "application/pdf",
                    "data": "JVBERi0=",
                },
            }
        ]
        self.assertEqual(
            self.userContent(blocks, PROFILES["openrouter"]),
            [
                {
                    "type": "file",
                    "file": {
                        "file_data": "data:application/pdf;base64,JVBERi0=",
                        "filename": "spec.pdf",
                    },
                }
            ],
        )

    def test_emptyTextSkipped(self) -> None:
        """
        P18 (empty text blocks): an empty text block is not sent, and an
        assistant turn without text has C{content: null}, never C{""}.
        """
        translated = translate(
            {
                "messages": [
                    _user(
                        [{"type": "text", "text": ""}, {"type": "text", "text": "Q"}]
                    ),
                    _assistant(
                        [
                            {"type": "text", "text": ""},
                            {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                        ]
                    ),
                    _user([{"type": "tool_result", "tool_use_id": "t1"}]),
                ]
            }
        )
        messages = translated.body["messages"]
        self.assertEqual(messages[0], {"role": "user", "content": "Q"})
        self.assertIsNone(messages[1]["content"])
        validateOpenAIRequest(self, translated.body)

    def test_unknownBlocksDropped(self) -> None:
        """
        Server-tool blocks and other types with no equivalent are dropped
        with a note.
        """
        translated = translate(
            {
                "messages": [
                    _user(
                        [
                            {"type": "text", "text": "Q"},
                            {"type": "container_upload", "file_id": "f"},
                        ]
                    ),
                    _assistant(
                        [
                            {"type": "server_tool_use", "id": "s", "name": "web"},
                            {"type": "web_search_tool_result", "content": []},
                            {"type": "text", "text": "A"},
                        ]
                    ),
                ]
            }
        )
        self.assertEqual(
            translated.body["messages"],
            [
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "A"},
            ],
        )
        self.assertIn("dropped a container_upload block", translated.notes)


class ToolResultTests(SynchronousTestCase):
    """
    P21 (tool results flattened into user text): results become C{tool}
    messages right after the assistant message that made the calls.
    """

    def conversation(self, results: list[Any], calls: int = 2) -> list[Any]:
        body = {
            "messages": [
                _user("Q"),
                _assistant(
                    [
                        {
                            "type": "tool_use",
                            "id": f"t{i}",
                            "name": "f",
                            "input": {"i": i},
                        }
                        for i in range(calls)
                    ]
                ),
                _user(results),
            ]
        }
        translated = translate(body)
        validateOpenAIRequest(self, translated.body)
        messages: list[Any] = translated.body["messages"][2:]
        return messages

    def test_parallelResultsInOrder(self) -> None:
        """
        One tool message per result, in order, then the user's text.
        """
        self.assertEqual(
            self.conversation(
                [
                    {"type": "tool_result", "tool_use_id": "t0", "content": "zero"},
                    {"type": "text", "text": "go on"},
                    {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
                ]
            ),
            [
                {"role": "tool", "tool_call_id": "t0", "content": "zero"},
                {"role": "tool", "tool_call_id": "t1", "content": "one"},
                {"role": "user", "content": "go on"},
            ],
        )

    def test_blockContentAndError(self) -> None:
        """
        Result content given as blocks is joined; C{is_error} marks the text
        with C{Error: }.
        """
        self.assertEqual(
            self.conversation(
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t0",
                        "content": [
                            {"type": "text", "text": "a"},
                            {"type": "text", "text": "b"},
                        ],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "exit 1",
                        "is_error": True,
                    },
                ]
            ),
            [
                {"role": "tool", "tool_call_id": "t0", "content": "a\nb"},
                {"role": "tool", "tool_call_id": "t1", "content": "Error: exit 1"},
            ],
        )

    def test_toolReference(self) -> None:
        """
        ToolSearch's C{tool_reference} blocks are named in the text.
        """
        self.assertEqual(
            self.conversation(
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t0",
                        "content": [
                            {"type": "tool_reference", "tool_name": "WebFetch"}
                        ],
                    }
                ],
                calls=1,
            ),
            [
                {
                    "role": "tool",
                    "tool_call_id": "t0",
                    "content": "[tool reference: WebFetch]",
                }
            ],
        )

    def test_imagesInResults(self) -> None:
        """
        OpenAI tool messages hold text only: a result's images follow the
        tool messages in a user message.
        """
        image = {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/jpeg", "data": "AA=="},
        }
        self.assertEqual(
            self.conversation(
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t0",
                        "content": [{"type": "text", "text": "shot"}, image],
                    }
                ],
                calls=1,
            ),
            [
                {"role": "tool", "tool_call_id": "t0", "content": "shot"},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/jpeg;base64,AA=="},
                        }
                    ],
                },
            ],
        )

    def test_missingResult(self) -> None:
        """
        A call whose result is missing gets a placeholder result, since
        OpenAI rejects an unanswered C{tool_calls} message (7.2 step 5).
        """
        self.assertEqual(
            self.conversation(
                [{"type": "tool_result", "tool_use_id": "t1", "content": "one"}]
            ),
            [
                {"role": "tool", "tool_call_id": "t1", "content": "one"},
                {"role": "tool", "tool_call_id": "t0", "content": MISSING_RESULT},
            ],
        )

    def test_orphanResult(self) -> None:
        """
        A result for a call that is not in the preceding assistant message
        cannot be a tool message; it is kept as user text.
        """
        translated = translate(
            {
                "messages": [
                    _user(
                        [{"type": "tool_result", "tool_use_id": "gone", "content": "x"}]
                    )
                ]
            }
        )
        self.assertEqual(
            translated.body["messages"],
            [{"role": "user", "content": "Result of tool call gone: x"}],
        )

    def test_assistantWithoutAnswerAtEnd(self) -> None:
        """
        A final assistant message with calls is still answered.
        """
        translated = translate(
            {
                "messages": [
                    _user("Q"),
                    _assistant(
                        [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]
                    ),
                ]
            }
        )
        self.assertEqual(
            translated.body["messages"][-1],
            {"role": "tool", "tool_call_id": "t", "content": MISSING_RESULT},
        )


class ToolTests(SynchronousTestCase):
    """
    C{tools} and C{tool_choice}.
    """

    def test_anthropicOnlyToolFields(self) -> None:
        """
        P20 (Anthropic-only fields): C{cache_control}, C{defer_loading},
        C{eager_input_streaming}, C{input_examples}, C{allowed_callers},
        C{strict} and C{type: custom} do not reach the function.
        """
        tool = {
            **WEATHER_TOOL,
            "type": "custom",
            "cache_control": {"type": "ephemeral"},
            "defer_loading": True,
            "eager_input_streaming": True,
            "input_examples": [{"location": "Rome"}],
            "allowed_callers": ["direct"],
            "strict": True,
        }
        translated = translate({"messages": [_user("Q")], "tools": [tool]})
        self.assertEqual(
            translated.body["tools"],
            [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Get weather",
                        "parameters": WEATHER_TOOL["input_schema"],
                    },
                }
            ],
        )
        validateOpenAIRequest(self, translated.body)

    def test_serverToolsDropped(self) -> None:
        """
        Server tools (web search) cannot run elsewhere: dropped with a note;
        with no tool left, neither C{tools} nor C{tool_choice} is sent.
        """
        translated = translate(
            {
                "messages": [_user("Q")],
                "tools": [
                    {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
                ],
                "tool_choice": {"type": "auto"},
            }
        )
        self.assertNotIn("tools", translated.body)
        self.assertNotIn("tool_choice", translated.body)
        self.assertEqual(
            translated.notes,
            ("dropped tool 'web_search' of type 'web_search_20250305'",),
        )

    def test_toolChoice(self) -> None:
        """
        P22 (C{any} not mapped): auto, any, tool and none become C{"auto"},
        C{"required"}, a function choice and C{"none"};
        C{disable_parallel_tool_use} becomes C{parallel_tool_calls: false}.
        """
        cases = [
            ({"type": "auto"}, "auto"),
            ({"type": "any"}, "required"),
            (
                {"type": "tool", "name": "get_weather"},
                {"type": "function", "function": {"name": "get_weather"}},
            ),
            ({"type": "none"}, "none"),
        ]
        for choice, expected in cases:
            translated = translate(
                {
                    "messages": [_user("Q")],
                    "tools": [WEATHER_TOOL],
                    "tool_choice": choice,
                }
            )
            self.assertEqual(translated.body["tool_choice"], expected)
            self.assertNotIn("parallel_tool_calls", translated.body)
            validateOpenAIRequest(self, translated.body)
        translated = translate(
            {
                "messages": [_user("Q")],
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            }
        )
        self.assertIs(translated.body["parallel_tool_calls"], False)


class ToolNameTests(SynchronousTestCase):
    """
    P12 (tool names over 64 characters): names are shortened reversibly.
    """

    LONG = "mcp__" + "very_long_server_name_" * 3 + "__tool"

    def test_shortNamesUnchanged(self) -> None:
        self.assertEqual(shortenToolName("Bash", 64), "Bash")
        self.assertEqual(shortenToolName("a-b_C9", 64), "a-b_C9")

    def test_longName(self) -> None:
        """
        A name over the limit becomes a prefix, C{_} and eight hex digits of
        its hash, exactly the limit long, deterministically.
        """
        short = shortenToolName(self.LONG, 64)
        self.assertEqual(len(short), 64)
        self.assertEqual(short, shortenToolName(self.LONG, 64))
        self.assertTrue(short.startswith(self.LONG[:55] + "_"))
        self.assertRegex(short, r"^[A-Za-z0-9_-]+$")
        self.assertNotEqual(short, shortenToolName(self.LONG + "2", 64))

    def test_invalidCharacters(self) -> None:
        """
        Characters outside C{[A-Za-z0-9_-]} are replaced, and the hash keeps
        names that differ only there apart.
        """
        dotted = shortenToolName("server.tool", 64)
        self.assertRegex(dotted, r"^server_tool_[0-9a-f]{8}$")
        self.assertNotEqual(dotted, shortenToolName("server:tool", 64))

    def test_profileLimit(self) -> None:
        """
        The profile's limit applies.
        """
        self.assertEqual(len(shortenToolName("x" * 40, 32)), 32)

    def test_roundTrip(self) -> None:
        """
        The same shortened name is used in C{tools}, in history and in
        C{tool_choice}, and maps back; unknown names map to themselves.
        """
        translated = translate(
            {
                "messages": [
                    _user("Q"),
                    _assistant(
                        [
                            {
                                "type": "tool_use",
                                "id": "t",
                                "name": self.LONG,
                                "input": {},
                            }
                        ]
                    ),
                    _user(
                        [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]
                    ),
                ],
                "tools": [{**WEATHER_TOOL, "name": self.LONG}],
                "tool_choice": {"type": "tool", "name": self.LONG},
            }
        )
        short = shortenToolName(self.LONG, 64)
        body = translated.body
        self.assertEqual(body["tools"][0]["function"]["name"], short)
        self.assertEqual(
            body["messages"][1]["tool_calls"][0]["function"]["name"], short
        )
        self.assertEqual(body["tool_choice"]["function"]["name"], short)
        names = translated.toolNames
        self.assertEqual(names.toOriginal(short), self.LONG)
        self.assertEqual(names.toOriginal("Bash"), "Bash")
        self.assertEqual(names.toOriginal("never_seen"), "never_seen")
        self.assertEqual(names.shortened, {short: self.LONG})
        validateOpenAIRequest(self, body)

    def test_emptyMap(self) -> None:
        names = ToolNames()
        self.assertEqual(names.toOriginal("x"), "x")
        self.assertEqual(names.toUpstream("x"), "x")


class MaxTokensTests(SynchronousTestCase):
    """
    P11 (C{max_tokens: 32000} over provider caps).
    """

    def test_clampedToCap(self) -> None:
        """
        DeepSeek takes at most 8192; the clamp is noted.
        """
        translated = translate(
            {"max_tokens": 32000, "messages": [_user("Q")]}, PROFILES["deepseek"]
        )
        self.assertEqual(translated.body["max_tokens"], 8192)
        self.assertIn("max_tokens 32000 clamped to 8192", translated.notes)

    def test_underCap(self) -> None:
        translated = translate(
            {"max_tokens": 100, "messages": [_user("Q")]}, PROFILES["deepseek"]
        )
        self.assertEqual(translated.body["max_tokens"], 100)
        self.assertEqual(translated.notes, ())

    def test_maxCompletionTokens(self) -> None:
        """
        Profiles for servers that deprecate C{max_tokens} send
        C{max_completion_tokens} instead, never both.
        """
        translated = translate(
            {"max_tokens": 32000, "messages": [_user("Q")]}, PROFILES["openai"]
        )
        self.assertEqual(translated.body["max_completion_tokens"], 32000)
        self.assertNotIn("max_tokens", translated.body)
        validateOpenAIRequest(self, translated.body)

    def test_zero(self) -> None:
        """
        Anthropic's cache-warming C{max_tokens: 0} is not valid for OpenAI.
        """
        translated = translate({"max_tokens": 0, "messages": [_user("Q")]})
        self.assertEqual(translated.body["max_tokens"], 1)


class ThinkingTests(SynchronousTestCase):
    """
    C{thinking} per profile, and thinking blocks in the history.
    """

    def reasoning(self, thinking: Any, profile: Profile, **extra: Any) -> Any:
        body = {"max_tokens": 32000, "messages": [_user("Q")], **extra}
        if thinking is not None:
            body["thinking"] = thinking
        translated = translate(body, profile)
        validateOpenAIRequest(self, translated.body)
        return {
            key: value
            for key, value in translated.body.items()
            if key in ("reasoning_effort", "reasoning")
        }

    def test_effortBuckets(self) -> None:
        self.assertEqual(
            [effortForBudget(n) for n in (0, 1024, 1025, 8192, 8193, 31999)],
            ["low", "low", "medium", "medium", "high", "high"],
        )

    def test_reasoningEffort(self) -> None:
        """
        C{reasoning_effort} from the budget, or for adaptive thinking from
        C{output_config.effort} (C{max} is C{high}), else C{medium}.
        """
        groq = PROFILES["groq"]
        self.assertEqual(
            self.reasoning({"type": "enabled", "budget_tokens": 31999}, groq),
            {"reasoning_effort": "high"},
        )
        self.assertEqual(
            self.reasoning({"type": "enabled", "budget_tokens": 2000}, groq),
            {"reasoning_effort": "medium"},
        )
        self.assertEqual(
            self.reasoning({"type": "adaptive"}, groq, output_config={"effort": "low"}),
            {"reasoning_effort": "low"},
        )
        self.assertEqual(
            self.reasoning({"type": "adaptive"}, groq, output_config={"effort": "max"}),
            {"reasoning_effort": "high"},
        )
        self.assertEqual(
            self.reasoning({"type": "adaptive", "display": "omitted"}, groq),
            {"reasoning_effort": "medium"},
        )

    def test_openrouter(self) -> None:
        """
        OpenRouter takes C{reasoning: {max_tokens}} (kept under
        C{max_tokens}), or an effort when there is no budget.
        """
        openrouter = PROFILES["openrouter"]
        self.assertEqual(
            self.reasoning({"type": "enabled", "budget_tokens": 31999}, openrouter),
            {"reasoning": {"max_tokens": 31999}},
        )
        self.assertEqual(
            self.reasoning(
                {"type": "adaptive"}, openrouter, output_config={"effort": "high"}
            ),
            {"reasoning": {"effort": "high"}},
        )
        capped = Profile("capped", maxTokensCap=4096, reasoning="openrouter")
        self.assertEqual(
            self.reasoning({"type": "enabled", "budget_tokens": 31999}, capped),
            {"reasoning": {"max_tokens": 4095}},
        )

    def test_disabledSendsNothing(self) -> None:
        """
        P20 (thinking disabled + C{reasoning_effort}): disabled or absent
        thinking sends no reasoning parameter, even with
        C{output_config.effort} set, as subagents do.
        """
        for profile in (PROFILES["groq"], PROFILES["openrouter"]):
            self.assertEqual(
                self.reasoning(
                    {"type": "disabled"}, profile, output_config={"effort": "high"}
                ),
                {},
            )
            self.assertEqual(self.reasoning(None, profile), {})

    def test_noParameter(self) -> None:
        """
        DeepSeek thinks by itself and rejects contradictory switches; the
        generic profile drops thinking.
        """
        enabled = {"type": "enabled", "budget_tokens": 31999}
        self.assertEqual(self.reasoning(enabled, PROFILES["deepseek"]), {})
        self.assertEqual(self.reasoning(enabled, GENERIC), {})

    def history(self, profile: Profile) -> list[Any]:
        body = {
            "messages": [
                _user("Q"),
                _assistant(
                    [
                        {
                            "type": "thinking",
                            "thinking": "Let me look.",
                            "signature": "s",
                        },
                        {"type": "redacted_thinking", "data": "opaque"},
                        {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                    ]
                ),
                _user([{"type": "tool_result", "tool_use_id": "t", "content": "r"}]),
            ]
        }
        translated = translate(body, profile)
        validateOpenAIRequest(self, translated.body)
        messages: list[Any] = translated.body["messages"]
        return messages

    def test_thinkingReplayed(self) -> None:
        """
        P9 (DeepSeek needs C{reasoning_content} back after tool-call turns):
        the thinking text goes back as C{reasoning_content}; redacted
        thinking is dropped.
        """
        assistant = self.history(PROFILES["deepseek"])[1]
        self.assertEqual(assistant["reasoning_content"], "Let me look.")
        self.assertIsNone(assistant["content"])
        self.assertEqual(len(assistant["tool_calls"]), 1)

    def test_thinkingDropped(self) -> None:
        """
        Profiles that do not replay reasoning drop thinking blocks.
        """
        assistant = self.history(GENERIC)[1]
        self.assertNotIn("reasoning_content", assistant)

    def test_thinkingOnlyTurnDropped(self) -> None:
        """
        An assistant turn with nothing but thinking is left out rather than
        sent empty.
        """
        translated = translate(
            {
                "messages": [
                    _user("Q"),
                    _assistant(
                        [{"type": "thinking", "thinking": "hm", "signature": "s"}]
                    ),
                    _user("again"),
                ]
            }
        )
        self.assertEqual(
            [m["role"] for m in translated.body["messages"]], ["user", "user"]
        )


class DroppedFieldTests(SynchronousTestCase):
    """
    Fields the upstream would reject are not forwarded.
    """

    def test_anthropicOnlyFields(self) -> None:
        """
        P19 (C{metadata.user_id} copied into C{user}) and P20 (Anthropic-only
        fields forwarded): none of them, nor C{cache_control} anywhere,
        reaches the upstream.
        """
        body = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "messages": [
                _user([{"type": "text", "text": "Q", "cache_control": {"type": "x"}}])
            ],
            "system": [{"type": "text", "text": "S", "cache_control": {"type": "x"}}],
            "metadata": {"user_id": json.dumps({"device_id": "d" * 64})},
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
            "cache_control": {"type": "ephemeral"},
            "output_config": {"effort": "high"},
            "top_k": 5,
            "service_tier": "auto",
            "container": "c",
            "inference_geo": "us",
            "mcp_servers": [],
            "thinking": {"type": "disabled"},
        }
        translated = translate(body)
        self.assertEqual(set(translated.body), {"model", "messages", "max_tokens"})
        self.assertNotIn("cache_control", json.dumps(translated.body))
        self.assertNotIn("user", translated.body)
        validateOpenAIRequest(self, translated.body)

    def test_structuredOutput(self) -> None:
        """
        C{output_config.format} becomes C{response_format}.
        """
        schema = {"type": "object", "properties": {"a": {"type": "string"}}}
        translated = translate(
            {
                "messages": [_user("Q")],
                "output_config": {"format": {"type": "json_schema", "schema": schema}},
            }
        )
        self.assertEqual(
            translated.body["response_format"],
            {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema},
            },
        )
        validateOpenAIRequest(self, translated.body)

    def test_streamOptionsPerProfile(self) -> None:
        """
        A server that rejects C{stream_options} gets only C{stream}.
        """
        profile = Profile("plain", streamUsage=False)
        translated = translate({"messages": [_user("Q")], "stream": True}, profile)
        self.assertTrue(translated.streaming)
        self.assertEqual(translated.body["stream"], True)
        self.assertNotIn("stream_options", translated.body)

    def test_midConversationSystem(self) -> None:
        """
        A C{system} role message (newest SDK types) becomes a system message.
        """
        translated = translate(
            {
                "messages": [
                    _user("Q"),
                    {"role": "system", "content": [{"type": "text", "text": "Now X"}]},
                ]
            }
        )
        self.assertEqual(
            translated.body["messages"][1], {"role": "system", "content": "Now X"}
        )


class ProfileTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        Every default profile named in the brief exists under its own name.
        """
        for name in (
            "generic",
            "deepseek",
            "openrouter",
            "groq",
            "kimi",
            "ollama",
            "vllm",
            "lmstudio",
        ):
            self.assertEqual(PROFILES[name].name, name)
        for name, profile in PROFILES.items():
            self.assertEqual(profile.name, name)

    def test_validation(self) -> None:
        self.assertRaises(ValueError, Profile, "x", reasoning="magic")
        self.assertRaises(ValueError, Profile, "x", toolNameLimit=8)

    def test_everyProfileTranslates(self) -> None:
        """
        A Claude Code-shaped request translates to a valid OpenAI request
        under every default profile.
        """
        body = {
            "max_tokens": 32000,
            "stream": True,
            "system": "S",
            "thinking": {"type": "enabled", "budget_tokens": 31999},
            "tools": [WEATHER_TOOL],
            "messages": [
                _user("Q"),
                _assistant(
                    [
                        {"type": "thinking", "thinking": "t", "signature": "s"},
                        {
                            "type": "tool_use",
                            "id": "a",
                            "name": "get_weather",
                            "input": {},
                        },
                    ]
                ),
                _user([{"type": "tool_result", "tool_use_id": "a", "content": "r"}]),
            ],
        }
        for profile in PROFILES.values():
            validateOpenAIRequest(self, translate(body, profile).body)


class CompatTests(SynchronousTestCase):
    """
    L{applyCompat} and the Anthropic-compatible defaults.
    """

    BETAS = [
        "claude-code-20250219",
        "interleaved-thinking-2025-05-14",
        "context-management-2025-06-27",
        "thinking-token-count-2026-05-13",
        "advanced-tool-use-2025-11-20",
        "oauth-2025-04-20",
    ]

    BODY = {
        "model": "glm-5",
        "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 31999, "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
        "output_config": {"effort": "high"},
        "system": [
            {
                "type": "text",
                "text": "S",
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ],
        "tools": [
            {"name": "Bash", "input_schema": {"type": "object"}},
            {
                "name": "DeferredToolPlaceholder",
                "input_schema": {"type": "object"},
                "defer_loading": True,
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "Q",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
            {"role": "assistant", "content": "plain string"},
        ],
    }

    def test_family(self) -> None:
        self.assertEqual(betaFamily("oauth-2025-04-20"), "oauth")
        self.assertEqual(betaFamily("claude-code-20250219"), "claude-code")
        self.assertEqual(betaFamily("no-date"), "no-date")

    def test_paths(self) -> None:
        """
        Dotted paths reach nested objects and each element of lists; the
        input is never modified.
        """
        body = json.loads(json.dumps(self.BODY))
        cleaned = withoutField(body, "messages[].content[].cache_control")
        self.assertEqual(
            cleaned["messages"][0]["content"], [{"type": "text", "text": "Q"}]
        )
        self.assertEqual(cleaned["messages"][1]["content"], "plain string")
        self.assertEqual(body, self.BODY)
        self.assertEqual(withoutField(body, "absent.path"), body)
        self.assertEqual(withoutField(body, "thinking.display.deeper"), body)

    def test_ladder(self) -> None:
        """
        The strict profile removes what Claude Code's 400 ladder removes
        (claude-code.md section 2: thinking-token-count and advanced-tool-use
        betas, C{thinking.display}, C{defer_loading}) and the rest of the
        Anthropic-only betas and fields (section 3 item 3).
        """
        body, betas = applyCompat(self.BODY, self.BETAS, COMPAT_PROFILES["strict"])
        self.assertEqual(betas, [])
        self.assertEqual(body["thinking"], {"type": "enabled", "budget_tokens": 31999})
        self.assertNotIn("context_management", body)
        self.assertNotIn("output_config", body)
        self.assertNotIn("defer_loading", body["tools"][1])
        self.assertEqual(body["system"][0]["cache_control"], {"type": "ephemeral"})
        self.assertEqual(body["messages"], self.BODY["messages"])
        self.assertIn("defer_loading", self.BODY["tools"][1])

    def test_keepsUnknownBetas(self) -> None:
        """
        Betas no profile names pass, and blanks are removed.
        """
        _, betas = applyCompat(
            {},
            ["files-api-2025-04-14", " ", "oauth-2025-04-20"],
            COMPAT_PROFILES["kimi"],
        )
        self.assertEqual(betas, ["files-api-2025-04-14"])

    def test_zaiDropsEveryBeta(self) -> None:
        _, betas = applyCompat({}, ["anything-2030-01-01"], COMPAT_PROFILES["zai"])
        self.assertEqual(betas, [])

    def test_deepseekKeepsEffort(self) -> None:
        """
        DeepSeek supports only C{output_config.effort}.
        """
        body = {"output_config": {"effort": "high", "format": {"type": "json_schema"}}}
        cleaned, _ = applyCompat(body, [], COMPAT_PROFILES["deepseek-anthropic"])
        self.assertEqual(cleaned["output_config"], {"effort": "high"})

    def test_defaults(self) -> None:
        for name in ("zai", "kimi", "deepseek-anthropic", "minimax", "strict"):
            compat = COMPAT_PROFILES[name]
            self.assertIsInstance(compat, AnthropicCompat)
            self.assertEqual(compat.name, name)
            applyCompat(self.BODY, self.BETAS, compat)
