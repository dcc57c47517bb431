"""
Tests for L{ccrouter.routing}.  No reactor.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.config import parseConfig
from ccrouter.routing import ModelPattern, planRequest
from tests.test_config import readmeExample

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


RRROUTER = parseConfig(readmeExample("rrouter-example"), "README.md", {}, "/home/me")


class ModePlanTests(SynchronousTestCase):
    def test_rrouterExample(self) -> None:
        """
        The README's rrouter setup: antigravity renames Claude models to
        Gemini ones, claude leaves them, auto tries antigravity then claude,
        all on the one default upstream.
        """
        self.assertEqual(RRROUTER.defaultMode, "auto")
        plan = planRequest(
            RRROUTER, b"POST", b"/v1/messages", body("claude-sonnet-4-5"), "auto"
        )
        self.assertTrue(plan.failover)
        self.assertEqual(
            [(a.target, a.upstreamModel) for a in plan.attempts],
            [
                ("antigravity", "gemini-claude-sonnet-4-5-thinking"),
                ("claude", "claude-sonnet-4-5"),
            ],
        )
        self.assertEqual({a.upstream for a in plan.attempts}, {RRROUTER.default})
        self.assertEqual(
            plan.attempts[0].body, body("gemini-claude-sonnet-4-5-thinking")
        )
        plan = planRequest(
            RRROUTER, b"POST", b"/v1/messages", body("claude-haiku-4-5"), "antigravity"
        )
        self.assertFalse(plan.failover)
        [attempt] = plan.attempts
        self.assertEqual(
            (attempt.target, attempt.upstreamModel),
            ("antigravity", "gemini-3-flash-preview"),
        )

    def test_modeChoosesRoutes(self) -> None:
        plan = planRequest(
            RRROUTER, b"POST", b"/v1/messages", body("claude-opus-4-1"), "claude"
        )
        [attempt] = plan.attempts
        self.assertEqual((plan.mode, attempt.target), ("claude", "claude"))
        self.assertEqual(attempt.upstreamModel, "claude-opus-4-1")

    def test_unknownModeMeansTheDefault(self) -> None:
        plan = planRequest(RRROUTER, b"POST", b"/v1/messages", body("x"), "gone")
        self.assertEqual(plan.mode, "auto")

    def test_unroutedRequestsIgnoreTheMode(self) -> None:
        """
        Requests without a model go to the default upstream once, with no
        target to count against, even in a failover mode.
        """
        plan = planRequest(RRROUTER, b"GET", b"/v1/models", b"", "auto")
        [attempt] = plan.attempts
        self.assertIsNone(attempt.target)
        self.assertFalse(plan.failover)

    def test_upstreamTarget(self) -> None:
        config = parseConfig(
            """
upstreams:
  zai: {url: "https://api.z.ai/api/anthropic", auth: {header: x-api-key, value: k}}
modes:
  claude: []
  auto: {failover: [claude, zai]}
""",
            "c.yaml",
            {},
        )
        plan = planRequest(config, b"POST", b"/v1/messages", body("claude-x"), "auto")
        self.assertEqual(
            [(a.target, a.upstream.name, a.upstreamModel) for a in plan.attempts],
            [("claude", "default", "claude-x"), ("zai", "zai", "claude-x")],
        )

    def test_sameRequestSentOnce(self) -> None:
        """
        A model no route of the preferred target matches would go to the
        default upstream unchanged from both targets: it is planned once,
        for the target that really serves it.
        """
        plan = planRequest(
            RRROUTER, b"POST", b"/v1/messages", body("claude-3-5-sonnet-x"), "auto"
        )
        self.assertEqual([a.target for a in plan.attempts], ["claude"])
        config = parseConfig(
            """
upstreams:
  zai: {url: "https://api.z.ai/api/anthropic", auth: {header: x-api-key, value: k}}
modes:
  a: [{match: "glm-*", upstream: zai}]
  b: [{match: "kimi-*", upstream: zai}]
  c: [{match: "x-*"}]
  auto: {failover: [a, b, c]}
""",
            "c.yaml",
            {},
        )
        plan = planRequest(config, b"POST", b"/v1/messages", body("x-1"), "auto")
        self.assertEqual([a.target for a in plan.attempts], ["c"])
        plan = planRequest(config, b"POST", b"/v1/messages", body("y-1"), "auto")
        self.assertEqual([a.target for a in plan.attempts], [None])
        self.assertIs(plan.attempts[0].upstream, config.default)

    def test_unmatchedModelCountsAgainstNoTarget(self) -> None:
        """
        In a mode whose routes do not match the model, the request is passed
        on to the default upstream and its outcome is no evidence about the
        mode's provider.
        """
        plan = planRequest(
            RRROUTER, b"POST", b"/v1/messages", body("gpt-4o"), "antigravity"
        )
        [attempt] = plan.attempts
        self.assertIsNone(attempt.target)
        plan = planRequest(RRROUTER, b"POST", b"/v1/messages", body("gpt-4o"), "claude")
        self.assertEqual(plan.attempts[0].target, "claude")
