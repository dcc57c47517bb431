"""
Tests for L{ccrouter.dialects} and L{ccrouter.translate.tokens}, and the
config keys that choose a dialect.  No reactor.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from ccrouter.config import ConfigError, parseConfig
from ccrouter.dialects import LocalAnswer, Outbound, prepare
from ccrouter.errors import ProxyError
from ccrouter.routing import planRequest
from ccrouter.translate.tokens import estimateTokens

CONFIG = parseConfig(
    """
upstreams:
  deepseek:
    url: "https://api.deepseek.com/v1"
    format: openai
    profile: deepseek
    auth: {header: authorization, value: "Bearer ds-key"}
  zai:
    url: "https://api.z.ai/api/anthropic"
    compat: zai
    auth: {header: x-api-key, value: zai-key}
  custom:
    url: "https://example.test"
    compat:
      drop_betas: [context-management]
      drop_fields: [context_management, "tools[].defer_loading"]
      set_headers: {x-provider: ccrouter}
routes:
  - {match: "deepseek-*", upstream: deepseek}
  - {match: "glm-*", upstream: zai}
  - {match: "custom-*", upstream: custom}
""",
    "c.yaml",
    {},
)


def clientHeaders() -> Headers:
    return Headers(
        {
            b"x-api-key": [b"sk-ant-client"],
            b"anthropic-version": [b"2023-06-01"],
            b"anthropic-beta": [
                b"context-management-2025-06-27,interleaved-thinking-2025-05-14"
            ],
            b"x-stainless-lang": [b"js"],
            b"user-agent": [b"claude-cli/2.1"],
        }
    )


def body(model: str, **extra: Any) -> bytes:
    return json.dumps(
        {
            "model": model,
            "max_tokens": 32000,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            **extra,
        }
    ).encode()


def prepared(
    model: str, path: bytes = b"/v1/messages?beta=true", **extra: Any
) -> Outbound | LocalAnswer | ProxyError:
    raw = body(model, **extra)
    plan = planRequest(CONFIG, b"POST", path.split(b"?")[0], raw)
    return prepare(plan.attempts[0], b"POST", path, clientHeaders(), model)


class OpenAIDialectTests(SynchronousTestCase):
    def test_translatedRequest(self) -> None:
        outbound = prepared("deepseek-chat")
        assert isinstance(outbound, Outbound)
        self.assertEqual(outbound.url, b"https://api.deepseek.com/v1/chat/completions")
        headers = outbound.headers
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Bearer ds-key"])
        for name in (
            b"x-api-key",
            b"anthropic-version",
            b"anthropic-beta",
            b"x-stainless-lang",
        ):
            self.assertIsNone(headers.getRawHeaders(name), name)
        self.assertEqual(headers.getRawHeaders(b"accept"), [b"text/event-stream"])
        sent = json.loads(outbound.body)
        self.assertEqual(sent["messages"], [{"role": "user", "content": "hi"}])
        self.assertEqual(sent["stream_options"], {"include_usage": True})
        assert outbound.translation is not None
        self.assertEqual(outbound.translation.model, "deepseek-chat")
        self.assertTrue(outbound.translation.streaming)

    def test_countTokensLocally(self) -> None:
        """
        An OpenAI-format upstream cannot count tokens: the count is estimated
        here over the whole request, and says so (pitfall P14).
        """
        answer = prepared("deepseek-chat", b"/v1/messages/count_tokens")
        assert isinstance(answer, LocalAnswer)
        self.assertEqual(json.loads(answer.body), {"input_tokens": 4})
        self.assertIn((b"x-ccrouter-token-count", b"estimate"), answer.headers)

    def test_bodyNotJSON(self) -> None:
        plan = planRequest(CONFIG, b"POST", b"/v1/messages", body("deepseek-x"))
        attempt = plan.attempts[0]
        from attrs import evolve

        error = prepare(
            evolve(attempt, body=b"{not json"), b"POST", b"/v1/messages", Headers()
        )
        assert isinstance(error, ProxyError)
        self.assertEqual(error.status, 400)


class CompatTests(SynchronousTestCase):
    def test_namedProfile(self) -> None:
        """
        Z.AI gets none of Claude Code's Anthropic-only betas or fields, so
        it never answers 400 and Claude Code never walks its retry ladder.
        """
        outbound = prepared(
            "glm-4.6",
            context_management={"edits": []},
            thinking={"type": "enabled", "budget_tokens": 1024, "display": "x"},
        )
        assert isinstance(outbound, Outbound)
        self.assertIsNone(outbound.headers.getRawHeaders(b"anthropic-beta"))
        sent = json.loads(outbound.body)
        self.assertNotIn("context_management", sent)
        self.assertNotIn("display", sent["thinking"])
        self.assertEqual(outbound.headers.getRawHeaders(b"x-api-key"), [b"zai-key"])

    def test_customProfile(self) -> None:
        outbound = prepared(
            "custom-1",
            context_management={"edits": []},
            tools=[{"name": "t", "input_schema": {}, "defer_loading": True}],
        )
        assert isinstance(outbound, Outbound)
        self.assertEqual(
            outbound.headers.getRawHeaders(b"anthropic-beta"),
            [b"interleaved-thinking-2025-05-14"],
        )
        self.assertEqual(outbound.headers.getRawHeaders(b"x-provider"), [b"ccrouter"])
        sent = json.loads(outbound.body)
        self.assertNotIn("context_management", sent)
        self.assertEqual(sent["tools"], [{"name": "t", "input_schema": {}}])

    def test_untouchedWithoutCompat(self) -> None:
        """
        The default upstream gets the body byte for byte.
        """
        raw = body("claude-sonnet-4-5", context_management={"edits": []})
        plan = planRequest(CONFIG, b"POST", b"/v1/messages", raw)
        outbound = prepare(plan.attempts[0], b"POST", b"/v1/messages", clientHeaders())
        assert isinstance(outbound, Outbound)
        self.assertIs(outbound.body, raw)

    def test_translatedThinkingStrippedBeforeAnthropic(self) -> None:
        """
        A conversation that went through a translating upstream carries
        thinking with a signature Anthropic would reject; it is removed
        before the request reaches Anthropic.
        """
        messages = [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "thinking",
                        "thinking": "hm",
                        "signature": "ccrouter-translated:abc",
                    },
                    {"type": "text", "text": "hello"},
                ],
            },
            {"role": "user", "content": "again"},
        ]
        raw = json.dumps({"model": "claude-sonnet-4-5", "messages": messages}).encode()
        plan = planRequest(CONFIG, b"POST", b"/v1/messages", raw)
        outbound = prepare(plan.attempts[0], b"POST", b"/v1/messages", Headers())
        assert isinstance(outbound, Outbound)
        sent = json.loads(outbound.body)
        self.assertEqual(
            sent["messages"][1]["content"], [{"type": "text", "text": "hello"}]
        )


class ConfigTests(SynchronousTestCase):
    def assertProblem(self, text: str, expected: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            parseConfig(text, "c.yaml", {})
        self.assertEqual(str(caught.exception), expected)

    def test_defaults(self) -> None:
        deepseek, zai, _ = CONFIG.upstreams
        self.assertEqual((deepseek.format, zai.format), ("openai", "anthropic"))
        assert deepseek.profile is not None and zai.compat is not None
        self.assertEqual((deepseek.profile.name, zai.compat.name), ("deepseek", "zai"))
        plain = parseConfig(
            "upstreams: {x: {url: 'http://h', format: openai}}", "c.yaml", {}
        ).upstreams[0]
        assert plain.profile is not None
        self.assertEqual(plain.profile.name, "generic")

    def test_maxTokensCap(self) -> None:
        upstream = parseConfig(
            "upstreams: {x: {url: 'http://h', format: openai, profile: deepseek,"
            " max_tokens: 4096}}",
            "c.yaml",
            {},
        ).upstreams[0]
        assert upstream.profile is not None
        self.assertEqual(
            (upstream.profile.name, upstream.profile.maxTokensCap), ("deepseek", 4096)
        )
        self.assertProblem(
            "upstreams: {x: {url: 'http://h', max_tokens: 5}}",
            "c.yaml:1: upstreams.x.max_tokens: 'max_tokens' caps what is sent to a"
            " 'format: openai' upstream",
        )

    def test_problems(self) -> None:
        self.assertProblem(
            "upstreams: {x: {url: 'http://h', format: gemini}}",
            "c.yaml:1: upstreams.x.format: 'gemini' is not a format; use"
            " 'anthropic' or 'openai'",
        )
        self.assertProblem(
            "upstreams: {x: {url: 'http://h', format: openai, profile: deepsek}}",
            "c.yaml:1: upstreams.x.profile: no profile named 'deepsek'; did you mean"
            " 'deepseek'? (profiles: generic, openai, deepseek, openrouter, groq,"
            " kimi, ollama, vllm, lmstudio)",
        )
        self.assertProblem(
            "upstreams: {x: {url: 'http://h', profile: deepseek}}",
            "c.yaml:1: upstreams.x.profile: 'profile' is for 'format: openai'"
            " upstreams; an Anthropic-compatible one takes 'compat'",
        )
        self.assertProblem(
            "upstreams: {x: {url: 'http://h/v1/chat/completions', format: openai}}",
            "c.yaml:1: upstreams.x.url: give the base URL; /chat/completions is added"
            " to it",
        )
        self.assertProblem(
            "upstreams: {x: {url: 'http://h', format: openai, compat: zai}}",
            "c.yaml:1: upstreams.x.compat: 'compat' is for Anthropic-format upstreams",
        )


class TokenEstimateTests(SynchronousTestCase):
    def test_countsEveryPart(self) -> None:
        base = {"messages": [{"role": "user", "content": "x" * 400}]}
        self.assertEqual(estimateTokens(base), 104)
        withSystem = {**base, "system": [{"type": "text", "text": "y" * 40}]}
        self.assertEqual(estimateTokens(withSystem), 114)
        image = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "data": "A"}}
                    ],
                }
            ]
        }
        self.assertEqual(estimateTokens(image), 1604)
        tools = {**base, "tools": [{"name": "t", "input_schema": {}}]}
        self.assertGreater(estimateTokens(tools), 104 + 300)
        toolUse = {
            "messages": [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "name": "Bash", "input": {"c": "ls"}}
                    ],
                }
            ]
        }
        self.assertEqual(estimateTokens(toolUse), 4 + round((4 + 11) / 4))


class OddBodyTests(SynchronousTestCase):
    def attempt(self, raw: bytes, path: bytes = b"/v1/messages") -> Any:
        plan = planRequest(CONFIG, b"POST", path, raw)
        return prepare(plan.attempts[0], b"POST", path, Headers(), "x")

    def test_loneSurrogate(self) -> None:
        """
        Tool output cut inside an emoji leaves a lone surrogate escape; it
        is passed on as an escape, on the translated and compat paths.
        """
        for model in ("deepseek-chat", "glm-4.6"):
            raw = (
                b'{"model": "%s", "max_tokens": 5, "context_management": {},'
                b' "messages": [{"role": "user", "content": "cut \\ud83d"}]}'
                % model.encode()
            )
            outbound = self.attempt(raw)
            assert isinstance(outbound, Outbound), outbound
            self.assertIn(b"\\ud83d", outbound.body)

    def test_unreadableShapesAreBadRequests(self) -> None:
        for raw, path in [
            (b'{"model": "deepseek-chat", "messages": 1}', b"/v1/messages"),
            (
                b'{"model": "deepseek-chat", "messages": 1}',
                b"/v1/messages/count_tokens",
            ),
            (
                b'{"model": "deepseek-chat", "messages": [],'
                b' "tools": [{"input_schema": {}}]}',
                b"/v1/messages",
            ),
        ]:
            error = self.attempt(raw, path)
            assert isinstance(error, ProxyError), (raw, error)
            self.assertEqual((error.status, error.type), (400, "invalid_request_error"))
