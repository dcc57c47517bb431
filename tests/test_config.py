"""
Tests for L{ccrouter.config}: the seed format, extensions, and errors that
name file, line and key.  No reactor.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.config import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_TOKEN_FILE_BYTES,
    ConfigError,
    Timeouts,
    checkConfig,
    parseConfig,
)

README = Path(__file__).resolve().parent.parent / "README.md"

SEED = """\
server:
  host: "127.0.0.1"
  port: 8080
default:
  url: "https://api.anthropic.com"
routes:
  - match: "claude-haiku"              # substring of the model name; first match wins
    upstream:
      url: "https://api.z.ai/api/anthropic"
      auth:
        header: "x-api-key"
        value: "${Z_AI_API_KEY}"       # environment reference; a missing variable is an error
"""


def readmeExample(marker: str) -> str:
    """
    The YAML block in the README that follows the HTML comment C{marker}.
    """
    text = README.read_text()
    match = re.search(
        r"<!-- " + re.escape(marker) + r" -->\s*```yaml\n(.*?)```", text, re.S
    )
    assert match is not None, f"README has no YAML block marked {marker}"
    return match.group(1)


class SeedFormatTests(SynchronousTestCase):
    def test_readmeShowsTheSeedVerbatim(self) -> None:
        """
        The README's first example is the seed configuration, character for
        character.
        """
        self.assertEqual(readmeExample("seed-config"), SEED)

    def test_seedLoads(self) -> None:
        """
        The seed configuration loads unchanged, with its environment
        reference expanded.
        """
        config = parseConfig(SEED, "config.yaml", {"Z_AI_API_KEY": "zai-secret"})
        self.assertEqual(config.server.listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual(config.default.origin, "https://api.anthropic.com")
        self.assertTrue(config.default.forwardsClientCredentials)
        self.assertIsNone(config.default.auth)
        [route] = config.routes
        self.assertEqual(route.pattern.text, "claude-haiku")
        self.assertFalse(route.pattern.isGlob)
        self.assertEqual(route.upstream.origin, "https://api.z.ai")
        self.assertEqual(route.upstream.basePath, "/api/anthropic")
        self.assertEqual(route.upstream.name, "api.z.ai")
        self.assertFalse(route.upstream.forwardsClientCredentials)
        assert route.upstream.auth is not None
        self.assertEqual(route.upstream.auth.header, "x-api-key")
        self.assertEqual(route.upstream.auth.value, "zai-secret")
        self.assertIsNone(route.model)

    def test_readmeFullExampleLoads(self) -> None:
        """
        The README's complete example is a valid configuration.
        """
        config = parseConfig(
            readmeExample("full-config"),
            "config.yaml",
            {"Z_AI_API_KEY": "z", "DEEPSEEK_API_KEY": "d", "KIMI_API_KEY": "k"},
        )
        self.assertGreater(len(config.routes), 2)

    def test_emptyFileMeansDefaults(self) -> None:
        """
        An empty file listens on 127.0.0.1:8080 and passes everything to
        Anthropic.
        """
        config = parseConfig("", "config.yaml", {})
        self.assertEqual(config.server.listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual(config.server.maxBodyBytes, DEFAULT_MAX_BODY_BYTES)
        self.assertEqual(config.default.origin, "https://api.anthropic.com")
        self.assertEqual(config.routes, ())

    def test_secretNotInRepr(self) -> None:
        """
        The repr of a config, as a careless log line would show it, does not
        contain the credential.
        """
        config = parseConfig(SEED, "config.yaml", {"Z_AI_API_KEY": "zai-CANARY-1"})
        self.assertNotIn("zai-CANARY-1", repr(config))


class ExtensionTests(SynchronousTestCase):
    def test_modelRewriteAndGlob(self) -> None:
        """
        A route may rename the model, and C{match} is a glob when it contains
        C{*}, C{?} or C{[}.
        """
        config = parseConfig(
            """
routes:
  - match: "claude-sonnet-*"
    model: "glm-4.6"
  - match: "opus"
""",
            "c.yaml",
            {},
        )
        sonnet, opus = config.routes
        self.assertTrue(sonnet.pattern.isGlob)
        self.assertEqual(sonnet.model, "glm-4.6")
        self.assertIs(sonnet.upstream, config.default)
        self.assertFalse(opus.pattern.isGlob)

    def test_namedUpstreams(self) -> None:
        """
        A route can name an upstream defined once under C{upstreams}.
        """
        config = parseConfig(
            """
upstreams:
  zai:
    url: https://api.z.ai/api/anthropic/
    auth: {header: authorization, value: "Bearer ${K}"}
routes:
  - match: haiku
    upstream: zai
  - match: sonnet
    upstream: zai
""",
            "c.yaml",
            {"K": "secret"},
        )
        first, second = config.routes
        self.assertIs(first.upstream, second.upstream)
        self.assertEqual(first.upstream.name, "zai")
        self.assertEqual(first.upstream.basePath, "/api/anthropic")
        assert first.upstream.auth is not None
        self.assertEqual(first.upstream.auth.value, "Bearer secret")

    def test_listenAndLimits(self) -> None:
        """
        C{server.listen} takes endpoint strings; sizes and durations take
        units.
        """
        config = parseConfig(
            """
server:
  listen: ["tcp:9000:interface=127.0.0.1", "unix:/tmp/x.sock"]
  max_body_bytes: 1MiB
timeouts:
  connect: 2
  idle: 10m
default:
  url: http://localhost:4000
  timeouts:
    stream_headers: 1500ms
""",
            "c.yaml",
            {},
        )
        self.assertEqual(
            config.server.listen, ("tcp:9000:interface=127.0.0.1", "unix:/tmp/x.sock")
        )
        self.assertEqual(config.server.maxBodyBytes, 1024 * 1024)
        self.assertEqual(
            config.default.timeouts,
            Timeouts(connect=2, headers=600, streamHeaders=1.5, idle=600),
        )

    def test_defaultAuthWithoutUrl(self) -> None:
        """
        C{default} may set only C{auth}: Anthropic with a configured key,
        which then replaces the client's credentials.
        """
        config = parseConfig(
            "default: {auth: {header: x-api-key, value: k}}", "c.yaml", {}
        )
        self.assertEqual(config.default.origin, "https://api.anthropic.com")
        self.assertFalse(config.default.forwardsClientCredentials)
        self.assertEqual(config.default.name, "default")

    def test_ipv6Host(self) -> None:
        """
        An IPv6 C{server.host} gives a C{tcp6} endpoint with escaped colons.
        """
        config = parseConfig("server: {host: '::1', port: 9}", "c.yaml", {})
        self.assertEqual(config.server.listen, ("tcp6:9:interface=\\:\\:1",))

    def test_literalDollar(self) -> None:
        """
        C{$${NAME}} is a literal C{${NAME}}, not an environment reference.
        """
        config = parseConfig(
            "routes: [{match: 'a', upstream: {url: 'http://x', auth: "
            "{header: x-k, value: 'p$${HOME}q'}}}]",
            "c.yaml",
            {},
        )
        auth = config.routes[0].upstream.auth
        assert auth is not None
        self.assertEqual(auth.value, "p${HOME}q")


class ConfigErrorCase(SynchronousTestCase):
    def assertConfigError(
        self, text: str, expected: str, environ: dict[str, str] | None = None
    ) -> None:
        with self.assertRaises(ConfigError) as caught:
            parseConfig(text, "config.yaml", environ or {})
        self.assertEqual(str(caught.exception), expected)


class ErrorTests(ConfigErrorCase):
    def test_missingEnvironmentVariable(self) -> None:
        """
        A missing variable names the file, the line and the key path.
        """
        self.assertConfigError(
            SEED,
            "config.yaml:12: routes[0].upstream.auth.value:"
            " environment variable Z_AI_API_KEY is not set",
        )

    def test_emptyEnvironmentVariable(self) -> None:
        """
        An empty variable is an error too: an empty key would only fail later,
        upstream.
        """
        self.assertConfigError(
            SEED,
            "config.yaml:12: routes[0].upstream.auth.value:"
            " environment variable Z_AI_API_KEY is empty",
            {"Z_AI_API_KEY": ""},
        )

    def test_typoInKey(self) -> None:
        """
        A misspelt key is an error with a suggestion, not silently ignored.
        """
        self.assertConfigError(
            "routes:\n  - match: haiku\n    uptream:\n      url: http://x\n",
            "config.yaml:3: routes[0].uptream: unknown key 'uptream';"
            " did you mean 'upstream'?",
        )

    def test_unknownTopLevelKey(self) -> None:
        """
        Unknown keys at the top level list what is allowed.
        """
        self.assertConfigError(
            "server: {}\nfoo: 1\n",
            "config.yaml:2: foo: unknown key 'foo'; expected one of:"
            " server, default, timeouts, upstreams, routes, modes, default_mode,"
            " mode_file, breaker",
        )

    def test_wrongTypes(self) -> None:
        """
        Wrong types are named with what was expected and what was found.
        """
        self.assertConfigError(
            "server:\n  port: '8080'\n",
            "config.yaml:2: server.port: expected an integer, found a string",
        )
        self.assertConfigError(
            "routes:\n  match: x\n",
            "config.yaml:2: routes: expected a list, found a mapping",
        )
        self.assertConfigError(
            "routes:\n  - match: 5\n",
            "config.yaml:2: routes[0].match: expected a string, found an integer",
        )
        self.assertConfigError(
            "server:\n  port: 70000\n",
            "config.yaml:2: server.port: must be between 0 and 65535",
        )

    def test_badUrls(self) -> None:
        """
        Upstream URLs must be http(s) bases without credentials or queries.
        """
        cases = {
            "ftp://x": "the URL must start with http:// or https://",
            "https://user:pw@x": "credentials in the URL are not allowed; use 'auth'",
            "https://user:pw@": "credentials in the URL are not allowed; use 'auth'",
            "https://x/a?b=c": "a base URL cannot have a query or fragment",
            "https://x/a?": "a base URL cannot have a query or fragment",
            "https://[::1]:8/": "IPv6 literal hosts are not supported; use a host"
            " name such as localhost",
            "https:///path": "the URL has no host",
            "https://[bad": "not a valid URL (check the host and port)",
            "https://h:port/": "not a valid URL (check the host and port)",
            "http://localhost:0": "port 0 cannot be connected to",
            "https://a b/": "the URL must not contain spaces or control characters",
            "https://a\tb/": "the URL must not contain spaces or control characters",
        }
        for url, problem in cases.items():
            self.assertConfigError(
                f'default:\n  url: "{url}"\n', f"config.yaml:2: default.url: {problem}"
            )
            self.assertConfigError(
                f'routes:\n  - match: x\n    upstream: {{url: "{url}"}}\n',
                f"config.yaml:3: routes[0].upstream.url: {problem}",
            )

    def test_urlErrorsDoNotRepeatSecrets(self) -> None:
        """
        A secret that ended up in a URL (a wrong variable, a key as the
        port) is not printed back.
        """
        for url in ["${KEY}", "https://h:${KEY}/", "https://user:${KEY}@"]:
            with self.assertRaises(ConfigError) as caught:
                parseConfig(
                    f'default: {{url: "{url}"}}', "c.yaml", {"KEY": "sk-SECRET"}
                )
            self.assertNotIn("sk-SECRET", str(caught.exception))

    def test_reservedAuthHeaders(self) -> None:
        """
        A credential cannot go in a header the proxy sets itself.
        """
        for header in ["Host", "content-length", "Transfer-Encoding", "connection"]:
            self.assertConfigError(
                f"default:\n  auth:\n    header: {header}\n    value: k\n",
                f"config.yaml:3: default.auth.header: {header!r} is set by the proxy"
                " itself and cannot carry a credential",
            )

    def test_blankValues(self) -> None:
        self.assertConfigError(
            "default:\n  auth:\n    header: x-api-key\n    value: '  '\n",
            "config.yaml:4: default.auth.value: must not be empty",
        )
        self.assertConfigError(
            "server:\n  host: ''\n", "config.yaml:2: server.host: must not be empty"
        )

    def test_yamlIntegers(self) -> None:
        """
        Integers mean what YAML says they mean (017 is octal 15).
        """
        config = parseConfig("server: {port: 017}", "c.yaml", {})
        self.assertEqual(config.server.listen, ("tcp:15:interface=127.0.0.1",))

    def test_deepNesting(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parseConfig("a: " + "[" * 100_000, "c.yaml", {})
        self.assertTrue(str(caught.exception).startswith("c.yaml"))

    def test_routeNeedsMatch(self) -> None:
        self.assertConfigError(
            "routes:\n  - model: x\n",
            "config.yaml:2: routes[0]: a route needs 'match' (a model name pattern)",
        )

    def test_unknownNamedUpstream(self) -> None:
        self.assertConfigError(
            "upstreams:\n  zai: {url: 'http://z'}\nroutes:\n  - match: a\n"
            "    upstream: zia\n",
            "config.yaml:5: routes[0].upstream: no upstream named 'zia' under"
            " 'upstreams'; did you mean 'zai'?",
        )

    def test_authHeaderInjection(self) -> None:
        """
        A credential value with a line break could smuggle headers upstream.
        """
        self.assertConfigError(
            "default:\n  url: http://x\n  auth:\n    header: x-api-key\n"
            '    value: "a\\r\\nHost: evil"\n',
            "config.yaml:5: default.auth.value: must not contain line breaks or NUL",
        )

    def test_duplicateKey(self) -> None:
        self.assertConfigError(
            "server: {}\nserver: {}\n", "config.yaml:2: server: duplicate key"
        )

    def test_invalidYaml(self) -> None:
        """
        A YAML syntax error gives the line it was found on.
        """
        with self.assertRaises(ConfigError) as caught:
            parseConfig("routes:\n  - match: [unclosed\n", "config.yaml", {})
        self.assertTrue(str(caught.exception).startswith("config.yaml:3: invalid YAML"))

    def test_topLevelNotMapping(self) -> None:
        self.assertConfigError(
            "- a\n", "config.yaml:1: expected a mapping, found a list"
        )

    def test_badDuration(self) -> None:
        self.assertConfigError(
            "timeouts:\n  idle: soon\n",
            "config.yaml:2: timeouts.idle: 'soon' is not a duration"
            " (seconds, or a number with ms, s, m or h)",
        )


MODES = """
upstreams:
  cliproxy: {url: "http://127.0.0.1:8317"}
default_mode: claude
modes:
  antigravity:
    - match: "claude-sonnet-*"
      model: "gemini-claude-sonnet-4-5-thinking"
      upstream: cliproxy
  claude: []
  auto:
    failover: [antigravity, claude, cliproxy]
breaker:
  failures: 4
  timeouts: 1
  cooldowns: [2s, 1m]
"""


class ModeConfigTests(SynchronousTestCase):
    def test_modes(self) -> None:
        config = parseConfig(MODES, "/etc/cc/config.yaml", {}, "/etc/cc")
        self.assertEqual(
            [mode.name for mode in config.modes], ["antigravity", "claude", "auto"]
        )
        self.assertEqual(config.defaultMode, "claude")
        self.assertEqual(config.modeFile, "/etc/cc/mode")
        auto = config.mode("auto")
        assert auto is not None
        self.assertEqual(
            [(t.name, t.kind) for t in auto.failover],
            [("antigravity", "mode"), ("claude", "mode"), ("cliproxy", "upstream")],
        )
        self.assertEqual(config.targetNames, ("antigravity", "claude", "cliproxy"))
        self.assertEqual(config.breaker.failures, 4)
        self.assertEqual(config.breaker.timeouts, 1)
        self.assertEqual(config.breaker.cooldowns, (2.0, 60.0))

    def test_withoutModes(self) -> None:
        """
        A config without modes has one implicit mode with its routes, and a
        mode file next to it only when it is a file.
        """
        config = parseConfig(SEED, "c.yaml", {"Z_AI_API_KEY": "k"}, "/srv")
        [mode] = config.modes
        self.assertEqual((mode.name, mode.routes), ("default", config.routes))
        self.assertEqual(config.defaultMode, "default")
        self.assertEqual(config.modeFile, "/srv/mode")
        self.assertEqual(config.targetNames, ())
        self.assertIsNone(parseConfig("", "<built-in>", {}).modeFile)

    def test_defaultModeIsTheFirst(self) -> None:
        config = parseConfig("modes:\n  b: []\n  a: []\n", "c.yaml", {})
        self.assertEqual(config.defaultMode, "b")

    def test_modeFilePaths(self) -> None:
        parse = parseConfig
        self.assertEqual(
            parse("mode_file: state/m\n", "c.yaml", {}, "/cfg").modeFile,
            "/cfg/state/m",
        )
        self.assertEqual(parse("mode_file: /run/m\n", "c.yaml", {}).modeFile, "/run/m")


class ModeConfigErrorTests(ConfigErrorCase):
    def test_routesBesideModes(self) -> None:
        self.assertConfigError(
            "routes:\n  - match: x\nmodes:\n  a: []\n",
            "config.yaml:2: routes: with 'modes', routes belong inside a mode"
            " (modes.NAME: [routes])",
        )

    def test_unknownFailoverTarget(self) -> None:
        self.assertConfigError(
            "modes:\n  claude: []\n  auto:\n    failover: [claud]\n",
            "config.yaml:4: modes.auto.failover[0]: no mode or upstream named"
            " 'claud'; did you mean 'claude'?",
        )

    def test_nestedFailover(self) -> None:
        self.assertConfigError(
            "modes:\n  a: []\n  x: {failover: [a]}\n  y: {failover: [x]}\n",
            "config.yaml:4: modes.y.failover[0]: 'x' is itself a failover mode;"
            " list the modes or upstreams it fails over between instead",
        )

    def test_ambiguousTarget(self) -> None:
        self.assertConfigError(
            "upstreams:\n  z: {url: 'http://h'}\nmodes:\n  z: []\n"
            "  auto: {failover: [z]}\n",
            "config.yaml:5: modes.auto.failover[0]: 'z' is both a mode and an"
            " upstream; rename one",
        )

    def test_duplicateAndEmptyFailover(self) -> None:
        self.assertConfigError(
            "modes:\n  a: []\n  auto: {failover: [a, a]}\n",
            "config.yaml:3: modes.auto.failover[1]: 'a' is listed twice",
        )
        self.assertConfigError(
            "modes:\n  auto: {failover: []}\n",
            "config.yaml:2: modes.auto.failover: must name at least one mode or"
            " upstream",
        )
        self.assertConfigError(
            "modes:\n  auto: {targets: [a]}\n",
            "config.yaml:2: modes.auto.targets: unknown key 'targets'; expected"
            " one of: failover",
        )

    def test_badModeNames(self) -> None:
        self.assertConfigError(
            "modes:\n  'my mode': []\n",
            "config.yaml:2: modes.my mode: a mode name is letters, digits, '_',"
            " '.' and '-', starting with a letter or digit",
        )
        self.assertConfigError(
            "modes: {}\n", "config.yaml:1: modes: must define at least one mode"
        )

    def test_unknownDefaultMode(self) -> None:
        self.assertConfigError(
            "default_mode: autoo\nmodes:\n  auto: []\n  claude: []\n",
            "config.yaml:1: default_mode: no mode named 'autoo'; did you mean 'auto'?",
        )
        self.assertConfigError(
            "default_mode: auto\n",
            "config.yaml:1: default_mode: there are no 'modes' to choose from",
        )

    def test_breakerLimits(self) -> None:
        self.assertConfigError(
            "breaker: {failures: 0}\n",
            "config.yaml:1: breaker.failures: must be between 1 and 1000",
        )
        self.assertConfigError(
            "breaker: {cooldowns: []}\n",
            "config.yaml:1: breaker.cooldowns: must list at least one duration",
        )
        self.assertConfigError(
            "breaker: {cooldowns: [soon]}\n",
            "config.yaml:1: breaker.cooldowns[0]: 'soon' is not a duration"
            " (seconds, or a number with ms, s, m or h)",
        )

    def test_nulInModeFile(self) -> None:
        self.assertConfigError(
            'mode_file: "/tmp/a\\0b"\n',
            "config.yaml:1: mode_file: a path cannot contain NUL",
        )

    def test_relativeModeFileNeedsAFile(self) -> None:
        self.assertConfigError(
            "mode_file: mode\n",
            "config.yaml:1: mode_file: a relative path needs a config file to be"
            " relative to; give the full path",
        )


class CheckConfigTests(SynchronousTestCase):
    """
    L{ccrouter.config.checkConfig} reports every problem, by line, and
    agrees with L{parseConfig} about whether a config is valid.
    """

    def check(self, text: str, environ: dict[str, str] | None = None) -> list[str]:
        from ccrouter.config import checkConfig

        return [
            str(problem)
            for problem in checkConfig(text, "config.yaml", environ or {}, "/cfg")
        ]

    def test_valid(self) -> None:
        self.assertEqual(self.check(SEED, {"Z_AI_API_KEY": "k"}), [])
        self.assertEqual(self.check(MODES), [])
        self.assertEqual(self.check(""), [])
        self.assertEqual(
            self.check(
                readmeExample("full-config"),
                {"Z_AI_API_KEY": "a", "DEEPSEEK_API_KEY": "b", "KIMI_API_KEY": "c"},
            ),
            [],
        )

    def test_everySection(self) -> None:
        """
        One problem in each section, and several in one mapping, are all
        reported, in line order.
        """
        self.assertEqual(
            self.check(
                "server:\n"
                "  port: x\n"  # 2
                "  hots: h\n"  # 3
                "  max_body_bytes: lots\n"  # 4
                "timeouts: {idle: 0}\n"  # 5
                "default:\n"
                "  url: 'gopher://x'\n"  # 7
                "breaker:\n"
                "  failures: 0\n"  # 9
                "  timeouts: 0\n"  # 10
                "mode_file: ''\n"  # 11
                "bogus: 1\n"  # 12
            ),
            [
                "config.yaml:2: server.port: expected an integer, found a string",
                "config.yaml:3: server.hots: unknown key 'hots'; did you mean 'host'?",
                "config.yaml:4: server.max_body_bytes: 'lots' is not a size"
                " (bytes, or KiB, MiB, GiB)",
                "config.yaml:5: timeouts.idle: must be more than zero",
                "config.yaml:7: default.url: the URL must start with http:// or"
                " https://",
                "config.yaml:9: breaker.failures: must be between 1 and 1000",
                "config.yaml:10: breaker.timeouts: must be between 1 and 1000",
                "config.yaml:11: mode_file: must not be empty",
                "config.yaml:12: bogus: unknown key 'bogus'; expected one of: server,"
                " default, timeouts, upstreams, routes, modes, default_mode,"
                " mode_file, breaker",
            ],
        )

    def test_eachUpstreamAndRoute(self) -> None:
        self.assertEqual(
            self.check(
                "upstreams:\n"
                "  a:\n"
                "    url: 'ftp://a'\n"  # 3
                "  b:\n"
                "    url: 'https://b'\n"
                "    auth: {header: 'bad header', value: ''}\n"  # 6
                "  c: {auth: {header: x-api-key, value: '${NOPE}'}}\n"  # 7
                "routes:\n"
                "  - match: ''\n"  # 9
                "    model: ''\n"  # 10
                "  - {match: x, upstream: b, extra: 1}\n"  # 11
                "  - {match: y, upstream: {url: 'https://u', auth: {}}}\n"  # 12
            ),
            [
                "config.yaml:3: upstreams.a.url: the URL must start with http://"
                " or https://",
                "config.yaml:6: upstreams.b.auth.header: 'bad header' is not a"
                " valid header name",
                "config.yaml:6: upstreams.b.auth.value: must not be empty",
                "config.yaml:7: upstreams.c.auth.value: environment variable NOPE"
                " is not set",
                "config.yaml:7: upstreams.c: an upstream needs 'url'",
                "config.yaml:9: routes[0].match: must not be empty",
                "config.yaml:10: routes[0].model: must not be empty",
                "config.yaml:11: routes[1].extra: unknown key 'extra'; expected one"
                " of: match, model, upstream",
                "config.yaml:12: routes[2].upstream.auth: 'auth' needs 'header'",
                "config.yaml:12: routes[2].upstream.auth: 'auth' needs 'value'",
            ],
        )

    def test_noFollowOnErrors(self) -> None:
        """
        A route, failover target or default mode naming something whose own
        definition failed is not reported again; a name that was never
        defined still is.
        """
        self.assertEqual(
            self.check(
                "upstreams:\n"
                "  zai: {url: 'ftp://z'}\n"  # 2
                "default_mode: 'bad mode'\n"
                "modes:\n"
                "  'bad mode': []\n"  # 5
                "  broken: 7\n"  # 6
                "  glm:\n"
                "    - {match: a, upstream: zai}\n"
                "    - {match: b, upstream: nothing}\n"  # 9
                "  auto: {failover: [glm, broken, 'bad mode', zai, missing]}\n"  # 10
            ),
            [
                "config.yaml:2: upstreams.zai.url: the URL must start with http://"
                " or https://",
                "config.yaml:5: modes.bad mode: a mode name is letters, digits, '_',"
                " '.' and '-', starting with a letter or digit",
                "config.yaml:6: modes.broken: expected a list, found an integer",
                "config.yaml:9: modes.glm[1].upstream: no upstream named 'nothing'"
                " under 'upstreams'",
                "config.yaml:10: modes.auto.failover[4]: no mode or upstream named"
                " 'missing'",
            ],
        )

    def test_brokenSections(self) -> None:
        """
        When a whole C{upstreams} or C{modes} section is wrong, names that
        refer to it are not reported.
        """
        self.assertEqual(
            self.check("upstreams: [zai]\nroutes:\n  - {match: a, upstream: zai}\n"),
            ["config.yaml:1: upstreams: expected a mapping, found a list"],
        )
        self.assertEqual(
            self.check("default_mode: auto\nmodes: [auto]\n"),
            ["config.yaml:2: modes: expected a mapping, found a list"],
        )

    def test_yamlError(self) -> None:
        [problem] = self.check("server:\n  port: [1\nroutes: x\n")
        self.assertTrue(problem.startswith("config.yaml:3: invalid YAML:"), problem)

    def test_duplicateKeys(self) -> None:
        self.assertEqual(
            self.check("server:\n  port: 1\n  port: 2\n  host: a\n  host: b\n"),
            [
                "config.yaml:3: server.port: duplicate key",
                "config.yaml:5: server.host: duplicate key",
            ],
        )

    def test_environment(self) -> None:
        self.assertEqual(
            self.check("server: {port: x}\n", {"CCROUTER_PORT": "http"}),
            [
                "environment: CCROUTER_PORT: must be a port number (1-65535)",
                "config.yaml:1: server.port: expected an integer, found a string",
            ],
        )

    def test_environmentPortNotADecimal(self) -> None:
        """
        Characters Python counts as digits but C{int} refuses (found by the
        config fuzz test) are reported, not raised.
        """
        for text in ("\u00b2", "1\u00b2", "\u0663"):
            self.assertEqual(
                self.check("", {"CCROUTER_PORT": text}),
                ["environment: CCROUTER_PORT: must be a port number (1-65535)"],
                text,
            )

    def test_agreesWithParseConfig(self) -> None:
        """
        For each text, C{parseConfig} fails exactly when C{checkConfig} has
        problems, and its error is one of them.
        """
        from ccrouter.config import checkConfig

        texts = [
            SEED,
            MODES,
            "routes:\n  - match: x\nmodes:\n  a: []\n",
            "modes:\n  claude: []\n  auto:\n    failover: [claud]\n",
            "modes:\n  a: []\n  x: {failover: [a]}\n  y: {failover: [x]}\n",
            "modes:\n  a: []\n  auto: {failover: [a, a]}\n",
            "modes:\n  auto: {failover: []}\n",
            "modes:\n  auto: {targets: [a]}\n",
            "modes: {}\n",
            "default_mode: auto\n",
            "breaker: {cooldowns: []}\n",
            "server: {listen: []}\n",
            "server: {listen: ~, host: 'a b'}\n",
            "upstreams:\n  default: {url: 'http://x'}\n",
            "routes:\n  - {match: x, upstream: default}\n",
            "[1, 2]\n",
            "default: {url: 'http://[::1]:80'}\n",
            "timeouts: {connect: 1, headers: 2, bogus: 3}\nserver: {port: 70000}\n",
        ]
        for text in texts:
            problems = [
                str(problem) for problem in checkConfig(text, "c.yaml", {}, "/cfg")
            ]
            try:
                parseConfig(text, "c.yaml", {}, "/cfg")
            except ConfigError as e:
                self.assertIn(str(e), problems, text)
            else:
                self.assertEqual(problems, [], text)


class LocalTokenConfigTests(ConfigErrorCase):
    def test_token(self) -> None:
        config = parseConfig(
            "server: {token: '${T}'}", "c.yaml", {"T": "a-long-enough-local-token"}
        )
        self.assertEqual(config.server.token, "a-long-enough-local-token")
        self.assertNotIn("a-long-enough", repr(config))

    def test_tooShort(self) -> None:
        self.assertConfigError(
            "server: {token: short}",
            "config.yaml:1: server.token: must be 16 to 1024 ASCII letters,"
            " digits or punctuation, without spaces",
        )

    def test_notASCII(self) -> None:
        """
        The token travels as a header value, which Claude Code (Node) only
        sends in ASCII.
        """
        with self.assertRaises(ConfigError) as caught:
            parseConfig(
                "server: {token: '\u00e9t\u00e9-\u00e9t\u00e9-\u00e9t\u00e9-xyz'}",
                "c.yaml",
                {},
            )
        self.assertIn("ASCII", str(caught.exception))


#: What L{TokenFileConfigTests} reads from token files.
FILE_TOKEN = "Rk3-file-token-Vq9Lw2Xc8Zt5"


class TokenFileConfigTests(SynchronousTestCase):
    """
    C{server.token_file}: the token in a file, read through the injected
    C{readFile}, so these tests do no I/O.
    """

    def setUp(self) -> None:
        self.read: list[str] = []
        self.content: bytes | Exception = FILE_TOKEN.encode() + b"\n"

    def readFile(self, path: str) -> bytes:
        self.read.append(path)
        if isinstance(self.content, Exception):
            raise self.content
        return self.content

    def parse(self, text: str, directory: str | None = "/cfg") -> object:
        return parseConfig(text, "config.yaml", {}, directory, self.readFile)

    def problem(self, text: str = "server: {token_file: tok}") -> str:
        with self.assertRaises(ConfigError) as caught:
            self.parse(text)
        message = str(caught.exception)
        # Whatever the file holds is never repeated.
        content = self.content if isinstance(self.content, bytes) else b""
        for word in content.decode("utf-8", "replace").split():
            if len(word) >= 6:
                self.assertNotIn(word[:6], message)
        return message

    def test_relative(self) -> None:
        """
        A relative path is taken from the config's directory; the token is
        the file's text without surrounding white space, and never in a
        C{repr}.
        """
        self.content = b"  " + FILE_TOKEN.encode() + b"\r\n\n"
        config = parseConfig(
            "server: {token_file: secrets/tok}",
            "config.yaml",
            {},
            "/cfg",
            self.readFile,
        )
        self.assertEqual(self.read, ["/cfg/secrets/tok"])
        self.assertEqual(config.server.token, FILE_TOKEN)
        self.assertEqual(config.server.tokenFile, "/cfg/secrets/tok")
        self.assertNotIn(FILE_TOKEN, repr(config))

    def test_absoluteAndHome(self) -> None:
        self.parse("server: {token_file: /run/user/1000/cc-token}")
        self.parse("server: {token_file: ~/cc-token}", directory=None)
        self.assertEqual(
            self.read,
            ["/run/user/1000/cc-token", os.path.expanduser("~/cc-token")],
        )

    def test_relativeWithoutDirectory(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.parse("server: {token_file: tok}", directory=None)
        self.assertIn("give the full path", str(caught.exception))
        self.assertEqual(self.read, [])

    def test_noReader(self) -> None:
        """
        Without C{readFile}, L{parseConfig} does no I/O: a config naming a
        token file is refused rather than loaded without its token.
        """
        with self.assertRaises(ConfigError) as caught:
            parseConfig("server: {token_file: tok}", "config.yaml", {}, "/cfg")
        self.assertEqual(
            str(caught.exception),
            "config.yaml:1: server.token_file: /cfg/tok: files cannot be read here",
        )

    def test_missing(self) -> None:
        self.content = FileNotFoundError(2, "No such file or directory")
        self.assertEqual(
            self.problem(),
            "config.yaml:1: server.token_file: /cfg/tok does not exist"
            " ('ccrouter init' creates it)",
        )

    def test_unreadable(self) -> None:
        self.content = PermissionError(13, "Permission denied")
        self.assertEqual(
            self.problem(),
            "config.yaml:1: server.token_file: /cfg/tok: cannot read:"
            " Permission denied",
        )

    def test_refusedByTheReader(self) -> None:
        self.content = ValueError("can be read or written by others (mode 0644)")
        self.assertEqual(
            self.problem(),
            "config.yaml:1: server.token_file: /cfg/tok can be read or written by"
            " others (mode 0644)",
        )

    def test_empty(self) -> None:
        for content in (b"", b"\n", b"  \n\t\n"):
            self.content = content
            self.assertEqual(
                self.problem(), "config.yaml:1: server.token_file: /cfg/tok is empty"
            )

    def test_invalid(self) -> None:
        """
        Too short, two tokens, spaces or control characters inside: the
        message names the file and the rule, never the content.
        """
        for content in (
            b"short-tok\n",
            FILE_TOKEN.encode() + b"\n" + FILE_TOKEN.encode(),
            b"Pw7-token has-a-space-inside",
            b"Kd8\x07bell-and-more-characters",
        ):
            self.content = content
            self.assertEqual(
                self.problem(),
                "config.yaml:1: server.token_file: /cfg/tok must hold one token:"
                " 16 to 1024 ASCII letters, digits or punctuation, without"
                " spaces",
            )

    def test_notText(self) -> None:
        self.content = b"\xff\xfe" + b"x" * 20
        self.assertEqual(
            self.problem(),
            "config.yaml:1: server.token_file: /cfg/tok is not UTF-8 text",
        )

    def test_tooLarge(self) -> None:
        self.content = b"y" * (MAX_TOKEN_FILE_BYTES + 1)
        self.assertIn("larger than a token file can be", self.problem())

    def test_both(self) -> None:
        self.assertEqual(
            self.problem(
                "server:\n  token: a-long-enough-local-token\n  token_file: tok\n"
            ),
            "config.yaml:3: server.token_file: give 'token' or 'token_file', not both",
        )

    def test_readOnEveryLoad(self) -> None:
        """
        Each load reads the file again: a reload sees a rotated token.
        """
        first = self.parse("server: {token_file: tok}")
        self.content = b"Zx5-rotated-token-Hq2Mn7"
        second = self.parse("server: {token_file: tok}")
        self.assertEqual(len(self.read), 2)
        self.assertEqual(
            (first.server.token, second.server.token),  # type: ignore[attr-defined]
            (FILE_TOKEN, "Zx5-rotated-token-Hq2Mn7"),
        )

    def test_checkConfigReportsIt(self) -> None:
        """
        C{config check} lists a token file problem with the others.
        """
        self.content = FileNotFoundError(2, "No such file or directory")
        problems = [
            str(problem)
            for problem in checkConfig(
                "server:\n  token_file: tok\n  port: many\n",
                "config.yaml",
                {},
                "/cfg",
                self.readFile,
            )
        ]
        self.assertEqual(
            problems,
            [
                "config.yaml:2: server.token_file: /cfg/tok does not exist"
                " ('ccrouter init' creates it)",
                "config.yaml:3: server.port: expected an integer, found a string",
            ],
        )


class ClientLimitsConfigTests(ConfigErrorCase):
    def test_defaults(self) -> None:
        """
        Without settings, the limits of reliability.md (d) apply.
        """
        limits = parseConfig("{}", "c.yaml", {}).server.limits
        self.assertEqual(
            (limits.headers, limits.bodyIdle, limits.bodyTotal, limits.keepAlive),
            (10.0, 30.0, 120.0, 75.0),
        )
        self.assertEqual(
            (limits.writeStall, limits.maxConnections, limits.maxStreams, limits.drain),
            (300.0, 256, 64, 30.0),
        )

    def test_settings(self) -> None:
        limits = parseConfig(
            "server:\n"
            "  client_timeouts: {headers: 5s, body_idle: 1m, body_total: 2m,"
            " keep_alive: 10, write_stall: 10m}\n"
            "  max_connections: 16\n"
            "  max_streams: 8\n"
            "  drain_timeout: 45s\n",
            "c.yaml",
            {},
        ).server.limits
        self.assertEqual(
            (limits.headers, limits.bodyIdle, limits.bodyTotal, limits.keepAlive),
            (5.0, 60.0, 120.0, 10.0),
        )
        self.assertEqual(
            (limits.writeStall, limits.maxConnections, limits.maxStreams, limits.drain),
            (600.0, 16, 8, 45.0),
        )

    def test_unknownTimeout(self) -> None:
        self.assertConfigError(
            "server: {client_timeouts: {header: 5}}",
            "config.yaml:1: server.client_timeouts.header: unknown key 'header';"
            " did you mean 'headers'?",
        )

    def test_zeroStreams(self) -> None:
        self.assertConfigError(
            "server: {max_streams: 0}",
            "config.yaml:1: server.max_streams: must be between 1 and 100000",
        )


class AllowRemoteConfigTests(ConfigErrorCase):
    def test_needsToken(self) -> None:
        """
        S1: listening where other machines can reach ccrouter is only
        allowed together with a token.
        """
        self.assertConfigError(
            "server: {allow_remote: true}",
            "config.yaml:1: server.allow_remote: needs server.token or"
            " server.token_file: without a token, anyone who can reach the port"
            " could use your keys",
        )

    def test_withToken(self) -> None:
        config = parseConfig(
            "server: {allow_remote: true, token: a-long-enough-local-token}",
            "c.yaml",
            {},
        )
        self.assertTrue(config.server.allowRemote)
        self.assertFalse(parseConfig("{}", "c.yaml", {}).server.allowRemote)

    def test_notABoolean(self) -> None:
        self.assertConfigError(
            "server: {allow_remote: yes please}",
            "config.yaml:1: server.allow_remote: expected true or false, found a string",
        )
