"""
Tests for L{ccrouter.routing}.  No reactor.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.config import parseConfig
from ccrouter.routing import ModelPattern, planRequest

CONFIG = parseConfig(
    """
upstreams:
  zai: {url: "https://api.z.ai/api/anthropic", auth: {header: x-api-key, value: k}}
  local: {url: "http://localhost:11434"}
routes:
  - match: "claude-haiku"
    model: "glm-4.5-air"
    upstream: zai
  - match: "claude-sonnet-*"
    upstream: local
  - match: "haiku"
    upstream: local
  - match: "claude-opus"
    model: "claude-sonnet-4-5"
""",
    "c.yaml",
    {},
)


def body(model: str, stream: bool = True) -> bytes:
    return b'{"model": "%s", "max_tokens": 1, "stream": %s}' % (
        model.encode(),
        b"true" if stream else b"false",
    )


class PatternTests(SynchronousTestCase):
    def test_substring(self) -> None:
        pattern = ModelPattern.parse("claude-haiku")
        self.assertFalse(pattern.isGlob)
        self.assertTrue(pattern.matches("claude-haiku-4-5"))
        self.assertTrue(pattern.matches("us.claude-haiku-5-5"))
        self.assertFalse(pattern.matches("claude-sonnet-4-5"))
        self.assertFalse(pattern.matches("Claude-Haiku-4-5"))

    def test_glob(self) -> None:
        """
        A glob matches the whole name, with C{*}, C{?} and character classes.
        """
        self.assertTrue(
            ModelPattern.parse("claude-sonnet-*").matches("claude-sonnet-4-5")
        )
        self.assertFalse(
            ModelPattern.parse("claude-sonnet-*").matches("x-claude-sonnet-4")
        )
        self.assertTrue(ModelPattern.parse("claude-?-[45]").matches("claude-a-4"))
        self.assertFalse(ModelPattern.parse("claude-?-[45]").matches("claude-a-6"))
        self.assertTrue(ModelPattern.parse("*").matches("anything"))


class PlanTests(SynchronousTestCase):
    def test_firstMatchWins(self) -> None:
        """
        Routes are tried top to bottom: C{claude-haiku} is caught by the first
        route, not by the later C{haiku}.
        """
        plan = planRequest(CONFIG, b"POST", b"/v1/messages", body("claude-haiku-4-5"))
        [attempt] = plan.attempts
        self.assertEqual(attempt.upstream.name, "zai")
        self.assertEqual(plan.clientModel, "claude-haiku-4-5")
        self.assertEqual(attempt.upstreamModel, "glm-4.5-air")
        self.assertEqual(attempt.body, body("glm-4.5-air"))
        self.assertTrue(plan.streaming)

    def test_routeWithoutRewriteKeepsBodyBytes(self) -> None:
        original = body("claude-sonnet-4-5", stream=False)
        plan = planRequest(CONFIG, b"POST", b"/v1/messages/count_tokens", original)
        [attempt] = plan.attempts
        self.assertEqual(attempt.upstream.name, "local")
        self.assertIs(attempt.body, original)
        self.assertFalse(plan.streaming)

    def test_rewriteOnDefault(self) -> None:
        """
        A route without an upstream renames the model on the default upstream.
        """
        plan = planRequest(CONFIG, b"POST", b"/v1/messages", body("claude-opus-4-1"))
        [attempt] = plan.attempts
        self.assertIs(attempt.upstream, CONFIG.default)
        self.assertEqual(attempt.upstreamModel, "claude-sonnet-4-5")

    def test_unmatchedModelGoesToDefault(self) -> None:
        original = body("my-provider/model-1")
        plan = planRequest(CONFIG, b"POST", b"/v1/messages", original)
        [attempt] = plan.attempts
        self.assertIs(attempt.upstream, CONFIG.default)
        self.assertIsNone(attempt.route)
        self.assertIs(attempt.body, original)

    def test_unroutedRequestsPassThrough(self) -> None:
        """
        Other methods and paths, and bodies without a usable model, go to the
        default upstream untouched.
        """
        haiku = body("claude-haiku-4-5")
        for method, path, raw in [
            (b"GET", b"/v1/models", b""),
            (b"HEAD", b"/", b""),
            (b"POST", b"/v1/messages/batches", haiku),
            (b"PUT", b"/v1/messages", haiku),
            (b"POST", b"/v1/messages", b"not json"),
            (b"POST", b"/v1/messages", b'{"stream": true}'),
            (b"POST", b"/v1/messages", b'{"model": ["claude-haiku"]}'),
        ]:
            plan = planRequest(CONFIG, method, path, raw)
            [attempt] = plan.attempts
            self.assertIs(attempt.upstream, CONFIG.default, (method, path))
            self.assertIs(attempt.body, raw)
            self.assertIsNone(plan.clientModel)
