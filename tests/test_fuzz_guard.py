"""
Property tests (hypothesis) for the request guard, the upstream URL built
from an accepted target, and the header filters.  No reactor.
"""

from __future__ import annotations

import json
import string

from hyperlink import EncodedURL
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI
from twisted.web.http_headers import Headers

from ccrouter.config import Upstream, parseConfig
from ccrouter.guard import (
    PROXIED_METHODS,
    Refusal,
    allowedMethods,
    checkRequest,
    checkTarget,
    isJSON,
    isLoopback,
    parseHost,
)
from ccrouter.headers import (
    CLIENT_CREDENTIALS,
    HOP_BY_HOP,
    clientResponseHeaders,
    connectionTokens,
    upstreamRequestHeaders,
)

TOKEN = "local-FUZZ-TOKEN-0123456789"
CONFIG = parseConfig(
    """
default: {url: "https://api.anthropic.com"}
upstreams:
  zai:
    url: "https://api.z.ai/api/anthropic"
    auth: {header: x-api-key, value: "zai-FUZZ-KEY"}
  kimi:
    url: "https://api.moonshot.ai/anthropic/"
    auth: {header: Authorization, value: "Bearer kimi-FUZZ-KEY"}
  local:
    url: "http://127.0.0.1:11434"
  keyless:
    url: "http://localhost:8000/deep/base/path"
routes:
  - {match: haiku, upstream: zai}
  - {match: kimi, upstream: kimi}
  - {match: local, upstream: local}
  - {match: keyless, upstream: keyless}
""",
    "fuzz.yaml",
    {},
)
UPSTREAMS = [CONFIG.default, *(route.upstream for route in CONFIG.routes)]

#: Pieces request targets are made of, hostile ones included.
_TARGET_PIECES = [
    "/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", "?", "#",
    "@", ":", ";", "=", "&", "%", "%0", "%00", "%0a", "%7f", "%41", "%zz",
    "*", "[", "]", " ", "\t", "\r", "\n", "\x00", "\x7f", "\xff", "\u00e9",
    "a", "v1", "messages", "count_tokens", "health", "http:", "https://",
    "evil.example", "127.0.0.1", "169.254.169.254", "<script>", "~", "+",
]  # fmt: skip

#: How a target may try to name a host of its own.
_TARGET_PREFIXES = [
    "", "/", "//", "/\\", "http://evil.example", "https://evil.example:443",
    "http:", "@evil.example", "//evil.example", "evil.example:443", "*",
    "/v1/messages", "/v1/messages?beta=true", "/v1/%2e%2e", "\\\\evil.example",
]  # fmt: skip

_PCHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@"
#: Well-formed origin-form targets: path segments of RFC 3986 characters
#: and percent escapes, and a query.
_segments = st.lists(
    st.lists(
        st.one_of(
            st.sampled_from(_PCHARS),
            st.integers(0, 255).map(lambda octet: f"%{octet:02X}"),
        ),
        max_size=6,
    ).map("".join),
    min_size=1,
    max_size=5,
)
well_formed_targets = st.tuples(
    _segments, st.none() | st.text(alphabet=_PCHARS + "/?", max_size=12)
).map(
    lambda parts: (
        "/" + "/".join(parts[0]) + ("" if parts[1] is None else "?" + parts[1])
    ).encode("ascii")
)

targets = st.one_of(
    well_formed_targets,
    st.binary(max_size=40),
    st.tuples(
        st.sampled_from(_TARGET_PREFIXES),
        st.lists(st.sampled_from(_TARGET_PIECES), max_size=12),
    ).map(lambda parts: (parts[0] + "".join(parts[1])).encode("utf-8")),
)
methods = st.one_of(
    st.sampled_from(
        [*PROXIED_METHODS, b"CONNECT", b"TRACE", b"OPTIONS", b"get", b"PROPFIND"]
    ),
    st.binary(min_size=1, max_size=8),
)
host_values = st.one_of(
    st.binary(max_size=30),
    st.sampled_from(
        [
            b"127.0.0.1:8080",
            b"localhost",
            b"[::1]:1",
            b"evil.example",
            b"127.0.0.1.nip.io",
            b"[::1]evil",
            b"allowed.internal:9",
            b"",
        ]
    ),
)
#: Header values as Twisted's parser hands them over: no CR or LF.
header_values = st.binary(max_size=30).map(
    lambda value: value.replace(b"\r", b"").replace(b"\n", b"")
)
guard_header_names = st.sampled_from(
    [
        b"host",
        b"origin",
        b"sec-fetch-site",
        b"content-type",
        b"content-length",
        b"transfer-encoding",
        b"x-ccrouter-token",
        b"x-other",
    ]
)
guard_header_values = st.one_of(
    header_values,
    host_values,
    st.sampled_from(
        [
            b"127.0.0.1",
            b"https://allowed.example",
            b"null",
            b"cross-site",
            b"same-site",
            b"none",
            b"application/json",
            b"application/json; charset=utf-8",
            b"text/plain",
            b"0",
            b"12",
            b"chunked",
            TOKEN.encode(),
        ]
    ),
)


def headersOf(pairs: list[tuple[bytes, bytes]]) -> Headers:
    headers = Headers()
    for name, value in pairs:
        headers.addRawHeader(name, value)
    return headers


def asSent(target: bytes) -> bytes:
    """
    C{target} as treq and the Agent put it on the wire: hyperlink drops an
    empty query's C{?}, and the Agent's C{urlparse} an empty C{;} parameter
    at the end of the last path segment.  Neither can change the host.
    """
    path, mark, query = target.partition(b"?")
    last = path.rsplit(b"/", 1)[-1]
    if last.endswith(b";") and last.index(b";") == len(last) - 1:
        path = path[:-1] or b"/"
    return path + (mark + query if query else b"")


class GuardProperties(SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(
        methods,
        targets,
        st.lists(st.tuples(guard_header_names, guard_header_values), max_size=8),
        st.booleans(),
    )
    def test_guardNeverFailsAndAcceptsOnlySafeRequests(
        self,
        method: bytes,
        target: bytes,
        pairs: list[tuple[bytes, bytes]],
        withToken: bool,
    ) -> None:
        """
        Z2, S2, S3, S4, S7, S10, S12: for any method, target and headers the
        guard answers without failing; a refusal is an Anthropic error that
        does not repeat the target; and a request it lets through has one
        loopback (or configured) Host, no foreign Origin, no cross-site
        fetch, a plain path, a method its path takes, a JSON body if any and
        the token when one is set.
        """
        headers = headersOf(pairs)
        token = TOKEN if withToken else None
        refusal = checkRequest(
            method,
            target,
            headers,
            allowedHosts=frozenset({"allowed.internal"}),
            allowedOrigins=frozenset({"https://allowed.example"}),
            token=token,
        )
        if refusal is not None:
            self.assertIsInstance(refusal, Refusal)
            body = json.loads(refusal.error.body())
            self.assertEqual(body["type"], "error")
            self.assertIn(refusal.error.status, (400, 401, 403, 405, 415))
            # The messages are fixed texts: none repeats the target, which
            # shows for targets with characters no message has.
            if set(target) & set(b"<>%@#\\\x00\xff"):
                self.assertNotIn(target.decode("latin-1"), body["error"]["message"])
            for name, _ in refusal.headers:
                self.assertEqual(name, b"allow")
            return
        path = target.split(b"?", 1)[0]
        self.assertIsNone(checkTarget(target))
        self.assertIn(method, allowedMethods(path))
        [host] = headers.getRawHeaders(b"host")
        name = parseHost(host)
        assert name is not None
        self.assertTrue(isLoopback(name) or name == "allowed.internal")
        origins = headers.getRawHeaders(b"origin")
        if origins is not None:
            self.assertEqual(
                [origin.strip().lower() for origin in origins],
                [b"https://allowed.example"],
            )
        else:
            for site in headers.getRawHeaders(b"sec-fetch-site", []):
                self.assertNotIn(site.strip().lower(), (b"cross-site", b"same-site"))
        if method in (b"POST", b"PUT", b"PATCH") or headers.hasHeader(
            b"transfer-encoding"
        ):
            [contentType] = headers.getRawHeaders(b"content-type")
            self.assertTrue(isJSON(contentType))
        if token is not None and path != b"/health":
            self.assertEqual(
                headers.getRawHeaders(b"x-ccrouter-token"), [TOKEN.encode()]
            )

    @settings(max_examples=500, deadline=None)
    @given(targets)
    def test_acceptedTargetsStayOnTheUpstream(self, target: bytes) -> None:
        """
        H18: any target the guard accepts, appended to any upstream's URL and
        sent the way treq and the Agent send it, reaches that upstream's
        scheme, host and port, under its base path, unchanged.
        """
        if checkTarget(target) is not None:
            return
        for upstream in UPSTREAMS:
            url = upstream.urlFor(target)
            # What treq does with the URL, then what the Agent does.
            sent = EncodedURL.from_text(url.decode("ascii")).to_uri().to_text()
            uri = URI.fromBytes(sent.encode("ascii"))
            self.assertEqual(
                (uri.scheme, uri.host, uri.port),
                (
                    upstream.scheme.encode(),
                    upstream.host.encode(),
                    upstream.port,
                ),
            )
            self.assertEqual(
                uri.originForm, asSent(upstream.basePath.encode() + target)
            )

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=60))
    def test_hostParserNeverFails(self, value: bytes) -> None:
        """
        Z2, S2: any Host value is parsed or refused, never a crash; a parsed
        name has no port, bracket, space or control character left in it.
        """
        name = parseHost(value)
        if name is not None:
            self.assertTrue(name)
            self.assertLessEqual(
                set(name), set(string.ascii_lowercase + string.digits + ".-_:")
            )
            if ":" in name:
                # Only a bracketed IPv6 address keeps colons.
                self.assertTrue(value.strip().startswith(b"["), value)


header_names = st.one_of(
    st.sampled_from(
        [
            *HOP_BY_HOP,
            *CLIENT_CREDENTIALS,
            b"Authorization",
            b"X-API-KEY",
            b"Cookie",
            b"host",
            b"content-length",
            b"expect",
            b"accept-encoding",
            b"x-ccrouter-token",
            b"anthropic-beta",
            b"x-foo",
            b"X-Foo",
            b"access-control-allow-origin",
            b"set-cookie",
            b"content-type",
        ]
    ),
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789", min_size=1, max_size=12
    ).map(str.encode),
)
header_lists = st.lists(st.tuples(header_names, header_values), max_size=12)
#: A Connection header naming some of the generated headers.
connection_values = st.lists(header_names, max_size=4).map(b", ".join)


class HeaderFilterProperties(SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(header_lists, connection_values, st.sampled_from(UPSTREAMS))
    def test_upstreamRequestHeaders(
        self,
        pairs: list[tuple[bytes, bytes]],
        connection: bytes,
        upstream: Upstream,
    ) -> None:
        """
        Z2, S8, H5: for any client headers, the upstream gets no hop-by-hop
        header, nothing named in Connection, no framing or Host or local
        token of the client's; a keyed provider gets its key exactly once
        and no client credential; Anthropic gets the client's credentials
        as sent; every other header passes with its values in order.
        """
        client = headersOf([*pairs, (b"connection", connection)])
        sent = upstreamRequestHeaders(client, upstream)
        named = connectionTokens(client)
        names = {name.lower() for name, _ in sent.getAllRawHeaders()}
        recomputed = {
            b"host",
            b"content-length",
            b"expect",
            b"accept-encoding",
            b"x-ccrouter-token",
        }
        self.assertFalse(names & (HOP_BY_HOP | recomputed))
        authName = None
        if upstream.auth is not None:
            authName = upstream.auth.header.lower().encode()
            self.assertEqual(
                sent.getRawHeaders(authName), [upstream.auth.value.encode()]
            )
        if not upstream.forwardsClientCredentials:
            self.assertFalse((names & CLIENT_CREDENTIALS) - {authName})
        for name in names - {authName}:
            self.assertNotIn(name, named)
        for name, _ in pairs:
            lowered = name.lower()
            dropped = (
                lowered in HOP_BY_HOP
                or lowered in recomputed
                or lowered in named
                or lowered == authName
                or (
                    lowered in CLIENT_CREDENTIALS
                    and not upstream.forwardsClientCredentials
                )
            )
            if not dropped:
                self.assertEqual(
                    sent.getRawHeaders(lowered), client.getRawHeaders(lowered)
                )

    @settings(max_examples=500, deadline=None)
    @given(header_lists, connection_values)
    def test_clientResponseHeaders(
        self, pairs: list[tuple[bytes, bytes]], connection: bytes
    ) -> None:
        """
        Z2, S6: for any upstream response headers, the client gets no
        hop-by-hop header, nothing named in Connection, no CORS header and
        no cookie; every other header passes with its values in order.
        """
        upstream = headersOf([*pairs, (b"connection", connection)])
        relayed = clientResponseHeaders(upstream)
        named = connectionTokens(upstream)
        for name, _ in relayed.getAllRawHeaders():
            lowered = name.lower()
            self.assertNotIn(lowered, HOP_BY_HOP)
            self.assertNotIn(lowered, named)
            self.assertNotIn(lowered, (b"set-cookie", b"set-cookie2"))
            self.assertFalse(lowered.startswith(b"access-control-"))
        for name, _ in pairs:
            lowered = name.lower()
            if not (
                lowered in HOP_BY_HOP
                or lowered in named
                or lowered in (b"set-cookie", b"set-cookie2")
                or lowered.startswith(b"access-control-")
            ):
                self.assertEqual(
                    relayed.getRawHeaders(lowered), upstream.getRawHeaders(lowered)
                )
