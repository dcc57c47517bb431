"""
Tests for L{ccrouter.guard}: the checks every request passes before it is
answered or forwarded.  No reactor.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from ccrouter.guard import (
    Refusal,
    checkRequest,
    checkTarget,
    isJSON,
    isLoopback,
    parseHost,
)

TOKEN = "local-GUARD-TOKEN-CANARY-0b7d"


def head(
    *pairs: tuple[bytes, bytes], host: bytes | None = b"127.0.0.1:8080"
) -> Headers:
    """
    Request headers: a loopback C{Host} unless told otherwise, then
    C{pairs} in order (a name may repeat).
    """
    headers = Headers()
    if host is not None:
        headers.addRawHeader(b"host", host)
    for name, value in pairs:
        headers.addRawHeader(name, value)
    return headers


JSON = (b"content-type", b"application/json")


def check(
    method: bytes,
    target: bytes,
    headers: Headers,
    token: str | None = None,
) -> Refusal | None:
    return checkRequest(
        method,
        target,
        headers,
        allowedHosts=frozenset({"ccrouter.internal"}),
        allowedOrigins=frozenset({"https://Trusted.example"}),
        token=token,
    )


class Assertions(SynchronousTestCase):
    def assertRefused(
        self, refusal: Refusal | None, status: int, kind: str, why: object = None
    ) -> Refusal:
        self.assertIsNotNone(refusal, why)
        assert refusal is not None
        self.assertEqual(
            (refusal.error.status, refusal.error.type), (status, kind), why
        )
        return refusal


class HostTests(Assertions):
    def test_parseHost(self) -> None:
        cases = {
            b"127.0.0.1:8080": "127.0.0.1",
            b"LocalHost": "localhost",
            b"localhost:": "localhost",
            b"[::1]:8080": "::1",
            b"[::1]": "::1",
            b"example.com:80": "example.com",
            b" 127.0.0.1 ": "127.0.0.1",
        }
        for raw, name in cases.items():
            self.assertEqual(parseHost(raw), name, raw)

    def test_malformedHost(self) -> None:
        """
        Anything but a name or address and an optional port is not a Host.
        """
        for raw in [
            b"",
            b"::1",
            b"[::1]evil",
            b"127.0.0.1:80:80",
            b"127.0.0.1:port",
            b"127.0.0.1:123456",
            b"evil@127.0.0.1",
            b"127.0.0.1/x",
            b"127.0.0.1 evil",
            b"127.0.0.1\x00",
            "l\u00f6calhost".encode(),
        ]:
            self.assertIsNone(parseHost(raw), raw)

    def test_loopback(self) -> None:
        for name in ["localhost", "127.0.0.1", "127.9.9.9", "::1", "dev.localhost"]:
            self.assertTrue(isLoopback(name), name)
        for name in [
            "",
            "0.0.0.0",
            "10.0.0.1",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "::ffff:8.8.8.8",
        ]:
            self.assertFalse(isLoopback(name), name)

    def test_foreignHostForbidden(self) -> None:
        """
        S2: a Host naming another machine (DNS rebinding) gets 403.
        """
        for host in [
            b"attacker.example:8080",
            b"attacker.example",
            b"127.0.0.1.nip.io:8080",
            b"localhost.evil.example",
            b"10.0.0.1",
        ]:
            self.assertRefused(
                check(b"GET", b"/v1/models", head(host=host)),
                403,
                "permission_error",
                host,
            )

    def test_missingOrRepeatedHost(self) -> None:
        """
        S2: no Host, two Host headers (even both loopback) or a malformed one
        get 400.
        """
        for headers in [
            head(host=None),
            head((b"host", b"127.0.0.1"), host=b"127.0.0.1"),
            head((b"host", b"evil.example"), host=b"127.0.0.1"),
            head(host=b"[::1]evil"),
            head(host=b""),
        ]:
            self.assertRefused(
                check(b"GET", b"/v1/models", headers), 400, "invalid_request_error"
            )

    def test_loopbackAnyPort(self) -> None:
        """
        S2: a loopback name with another port than ccrouter's is served: a
        rebinding page cannot produce it, port forwards do.
        """
        for host in [
            b"127.0.0.1:8080",
            b"127.0.0.1:1",
            b"localhost",
            b"[::1]:9999",
            b"127.1.2.3",
            b"CCROUTER.internal:1",
            b"dev.localhost:3000",
        ]:
            self.assertIsNone(check(b"GET", b"/v1/models", head(host=host)), host)


class BrowserTests(Assertions):
    def test_originForbidden(self) -> None:
        """
        S3: any Origin (including C{null}) but a configured one gets 403; the
        configured one is compared without regard to case.
        """
        for origin in [
            b"https://evil.example",
            b"null",
            b"http://127.0.0.1:8080",
            b"https://trusted.example.evil",
        ]:
            self.assertRefused(
                check(b"POST", b"/v1/messages", head(JSON, (b"origin", origin))),
                403,
                "permission_error",
                origin,
            )
        self.assertRefused(
            check(
                b"POST",
                b"/v1/messages",
                head(
                    JSON,
                    (b"origin", b"https://trusted.example"),
                    (b"origin", b"https://evil.example"),
                ),
            ),
            403,
            "permission_error",
        )
        self.assertIsNone(
            check(
                b"POST",
                b"/v1/messages",
                head(JSON, (b"origin", b"https://TRUSTED.example")),
            )
        )

    def test_crossSiteFetchForbidden(self) -> None:
        """
        S3: C{Sec-Fetch-Site: cross-site} or C{same-site} without an Origin
        (a no-cors GET from another page) gets 403; C{none} and
        C{same-origin} are not from another site.
        """
        for site in [b"cross-site", b"same-site", b"Cross-Site"]:
            self.assertRefused(
                check(b"GET", b"/v1/models", head((b"sec-fetch-site", site))),
                403,
                "permission_error",
                site,
            )
        for site in [b"none", b"same-origin"]:
            self.assertIsNone(
                check(b"GET", b"/v1/models", head((b"sec-fetch-site", site))), site
            )
        # Node's fetch sends Sec-Fetch-Mode: cors; that alone is no browser.
        self.assertIsNone(
            check(b"POST", b"/v1/messages", head(JSON, (b"sec-fetch-mode", b"cors")))
        )

    def test_trustedOriginMayBeCrossSite(self) -> None:
        """
        A configured origin is, by nature, another site.
        """
        self.assertIsNone(
            check(
                b"POST",
                b"/v1/messages",
                head(
                    JSON,
                    (b"origin", b"https://trusted.example"),
                    (b"sec-fetch-site", b"cross-site"),
                ),
            )
        )


class ContentTypeTests(Assertions):
    def test_isJSON(self) -> None:
        for value in [
            b"application/json",
            b"Application/JSON",
            b"application/json; charset=utf-8",
            b" application/json ;charset=UTF-8",
            b"application/vnd.api+json",
        ]:
            self.assertTrue(isJSON(value), value)
        for value in [
            b"",
            b"text/plain",
            b"text/plain; application/json",
            b"application/x-www-form-urlencoded",
            b"multipart/form-data; boundary=x",
            b"text/json",
            b"application/jsonx",
            b"application/json-seq",
            b"image/svg+json",
        ]:
            self.assertFalse(isJSON(value), value)

    def test_simpleRequestBodiesRefused(self) -> None:
        """
        S4: a body a page could send without a CORS preflight (text/plain,
        form, multipart, or no Content-Type at all) gets 415.
        """
        for headers in [
            head((b"content-type", b"text/plain"), (b"content-length", b"2")),
            head((b"content-type", b"application/x-www-form-urlencoded")),
            head((b"content-type", b"multipart/form-data; boundary=b")),
            head((b"content-length", b"2")),
            head(),
            head(JSON, (b"content-type", b"text/plain")),
        ]:
            for path in [b"/v1/messages", b"/v1/messages/count_tokens", b"/v1/x"]:
                refusal = self.assertRefused(
                    check(b"POST", path, headers), 415, "invalid_request_error"
                )
                self.assertEqual(refusal.headers, ())

    def test_everyBodyMustBeJSON(self) -> None:
        """
        S4: PUT and PATCH always, and any method with a body, need JSON.
        """
        for method, headers in [
            (b"PUT", head()),
            (b"PATCH", head((b"content-type", b"text/plain"))),
            (b"DELETE", head((b"content-length", b"5"))),
            (b"GET", head((b"transfer-encoding", b"chunked"))),
        ]:
            self.assertRefused(
                check(method, b"/v1/files/x", headers), 415, "invalid_request_error"
            )
        self.assertIsNone(check(b"PUT", b"/v1/files/x", head(JSON)))

    def test_bodilessRequestsNeedNone(self) -> None:
        for method, headers in [
            (b"GET", head()),
            (b"HEAD", head()),
            (b"DELETE", head()),
            (b"GET", head((b"content-length", b"0"))),
        ]:
            self.assertIsNone(check(method, b"/v1/models", headers), method)


class MethodTests(Assertions):
    def assertNotAllowed(
        self, method: bytes, target: bytes, allow: bytes, headers: Headers | None = None
    ) -> None:
        refusal = self.assertRefused(
            check(method, target, head(JSON) if headers is None else headers),
            405,
            "invalid_request_error",
            (method, target),
        )
        self.assertEqual(refusal.headers, ((b"allow", allow),))

    def test_neverForwarded(self) -> None:
        """
        S5, S12: CONNECT (even in authority form), TRACE, OPTIONS (a CORS
        preflight or not) and unknown methods get 405 with C{Allow}, on
        every path.
        """
        general = b"GET, HEAD, POST, PUT, PATCH, DELETE"
        for method, target in [
            (b"CONNECT", b"api.anthropic.com:443"),
            (b"CONNECT", b"/v1/x"),
            (b"TRACE", b"/v1/x"),
            (b"OPTIONS", b"/v1/x"),
            (b"OPTIONS", b"*"),
            (b"PROPFIND", b"/v1/x"),
            (b"get", b"/v1/x"),
        ]:
            self.assertNotAllowed(method, target, general)
        self.assertNotAllowed(
            b"OPTIONS",
            b"/v1/messages",
            b"POST",
            head(
                (b"access-control-request-method", b"POST"),
                (b"access-control-request-headers", b"content-type,x-api-key"),
            ),
        )
        self.assertNotAllowed(b"TRACE", b"/health", b"GET, HEAD")

    def test_messagesOnlyTakePost(self) -> None:
        """
        S12: the routed paths answer only POST.
        """
        for method in [b"GET", b"HEAD", b"PUT", b"DELETE", b"PATCH"]:
            for path in [b"/v1/messages", b"/v1/messages/count_tokens?beta=true"]:
                self.assertNotAllowed(method, path, b"POST")
        self.assertIsNone(check(b"POST", b"/v1/messages?beta=true", head(JSON)))

    def test_healthOnlyGetAndHead(self) -> None:
        for method in [b"GET", b"HEAD"]:
            self.assertIsNone(check(method, b"/health", head()))
        self.assertNotAllowed(b"POST", b"/health", b"GET, HEAD")

    def test_otherPathsPassEveryUsualMethod(self) -> None:
        """
        Claude Code may use other Anthropic endpoints: they pass through.
        """
        for method in [b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE"]:
            self.assertIsNone(check(method, b"/v1/models", head(JSON)), method)


class TargetTests(Assertions):
    def test_plainTargetsPass(self) -> None:
        for target in [
            b"/",
            b"/v1/messages",
            b"/v1/messages?beta=true",
            b"/v1/models?limit=1000&after_id=x%2Fy",
            b"/v1/files/file_011CNha8iCJcU1wXNR6q4V8w/content",
            b"/v1/x;p=1/y:z@w!$&'()*+,=~",
            b"/v1/..x/x..",
            b"/v1/%7e",
            b"/x?q=a/b?c:d@e%0A",
            b"/x?",
            b"/%3Cscript%3E",
        ]:
            self.assertIsNone(checkTarget(target), target)

    def test_escapingTargetsRefused(self) -> None:
        """
        S10: targets that would name another host or climb out of an
        upstream's base path get 400, and the message never repeats them.
        """
        for target in [
            b"http://169.254.169.254/v1/messages",
            b"https://evil.example/v1/messages",
            b"@evil.example/v1/messages",
            b"evil.example:443",
            b"v1/messages",
            b"*",
            b"",
            b"//evil.example/v1/messages",
            b"//",
            b"/v1/messages/../../x",
            b"/v1/%2e%2e/",
            b"/v1/%2E./x",
            b"/v1/.%2e",
            b"/v1/./messages",
            b"/v1/..",
            b"/..",
            b"/\\evil",
            b"/v1\\..\\x",
            b"/v1/%2fevil",
            b"/v1/%2F..%2Fx",
            b"/v1/%5c..",
            b"/v1/%5C",
            b"/v1/messages#frag",
            b"/v1/messages?x#frag",
            b"/v1/\x00",
            b"/v1/%00",
            b"/v1?x=%00",
            b"/v1/%0d%0aX-Injected:%201",
            b"/v1/%7f",
            b"/v1/\r\nx",
            b"/v1/\x1b[31m",
            b"/v1/ x",
            b"/v1/\xff",
            "/v1/\u00e9".encode(),
            b"/v1/%zz",
            b"/v1/%2",
            b"/v1?x=%",
            b"/<script>alert(1)</script>",
            b'/v1/"',
            b"/v1/{x}",
            b"/v1?x=<y>",
        ]:
            error = checkTarget(target)
            self.assertIsNotNone(error, target)
            assert error is not None
            self.assertEqual((error.status, error.type), (400, "invalid_request_error"))
            if len(target) > 3:
                self.assertNotIn(target, error.body(), target)
            refusal = self.assertRefused(
                check(b"GET", target, head()), 400, "invalid_request_error", target
            )
            self.assertEqual(refusal.error, error)


class TokenTests(Assertions):
    def test_tokenRequired(self) -> None:
        """
        S7: with a token configured, a request without it, with a wrong one,
        a prefix of it or two copies gets 401, and the answer never names it.
        """
        for presented in [
            [],
            [b"wrong"],
            [TOKEN.encode()[:-1]],
            [TOKEN.encode() + b"x"],
            [TOKEN.upper().encode()],
            [TOKEN.encode(), TOKEN.encode()],
        ]:
            headers = head(JSON, *((b"x-ccrouter-token", value) for value in presented))
            refusal = self.assertRefused(
                check(b"POST", b"/v1/messages", headers, TOKEN),
                401,
                "authentication_error",
                presented,
            )
            self.assertNotIn(TOKEN.encode(), refusal.error.body())
        self.assertIsNone(
            check(
                b"POST",
                b"/v1/messages",
                head(JSON, (b"x-ccrouter-token", TOKEN.encode())),
                TOKEN,
            )
        )

    def test_healthExempt(self) -> None:
        self.assertIsNone(check(b"GET", b"/health", head(), TOKEN))
        self.assertIsNone(check(b"HEAD", b"/health?x=1", head(), TOKEN))

    def test_browserRefusedBeforeToken(self) -> None:
        """
        A page that somehow has the token is still refused as a page.
        """
        headers = head(
            JSON,
            (b"x-ccrouter-token", TOKEN.encode()),
            (b"origin", b"https://evil.example"),
        )
        self.assertRefused(
            check(b"POST", b"/v1/messages", headers, TOKEN), 403, "permission_error"
        )

    def test_tokenBeforeMethodAndContentType(self) -> None:
        """
        Without the token a client learns nothing about what else is wrong.
        """
        for method, path in [(b"GET", b"/v1/messages"), (b"POST", b"/v1/x")]:
            self.assertRefused(
                check(method, path, head(), TOKEN), 401, "authentication_error"
            )
