"""Signed node-to-node requests (connector.httpsig): RFC 9421 with SM2, RFC 9530 with SM3.

- round trips through real httpx clients: an in-process Starlette app (httpx.ASGITransport,
  async auth flow) and a real uvicorn server on a loopback port (sync auth flow);
- the wire format: the signature base sign_request builds equals the one RFC 9421 §2.5
  describes, written out by hand here, and requests signed by that hand-written code are
  accepted; OpenSSL checks the SM2 signature over the hand-built base;
- an independent RFC 9421 implementation, the http-message-signatures package with an SM2
  algorithm class adapted to it: it verifies what we sign and we verify what it signs, over
  RFC 9421 Appendix B-style edge cases and arbitrary methods, URLs and header values; both
  refuse to sign the same requests; our strict structured-field parsing agrees with http_sf's;
- every refusal reason, made to happen;
- hypothesis round trips for arbitrary bodies, paths and queries;
- the in-memory nonce store: replay, expiry, the bound, threads.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import http_sf
import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureAlgorithm,
    MappingKeyResolver,
    algorithms,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from trustspace.connector.httpsig import (
    ALGORITHM,
    CREDENTIAL_HEADER,
    LABEL,
    MemoryNonceStore,
    NonceStoreFull,
    RequestSignatureError,
    SM2RequestAuth,
    VerifiedRequest,
    asgi_request_url,
    new_nonce,
    sign_request,
    verify_request,
)
from trustspace.crypto import SM3, SM2PrivateKey, SM2PublicKey, sm3

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
SKEW = timedelta(seconds=300)
URL = "https://node-b.example/dsp/catalog/request?limit=10&offset=0"
BODY = b'{"@type":"dspace:CatalogRequestMessage","filter":[]}'
CREDENTIAL = "eyJ0eXBlIjoidHJ1c3RzcGFjZS5tZW1iZXJzaGlwIn0"
HEADERS = (("Content-Type", "application/json"), ("Trustspace-Credential", CREDENTIAL))


# ---- helpers -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Req:
    """A request as the receiving side sees it: method, absolute URL, field lines, body."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str:
        (value,) = [v for n, v in self.headers if n.lower() == name.lower()]
        return value

    def without(self, name: str) -> Req:
        return replace(self, headers=tuple((n, v) for n, v in self.headers
                                           if n.lower() != name.lower()))

    def with_header(self, name: str, value: str) -> Req:
        return replace(self.without(name), headers=(*self.without(name).headers, (name, value)))

    def adding(self, name: str, value: str) -> Req:
        """One more field line (a repeated field), keeping the existing ones."""
        return replace(self, headers=(*self.headers, (name, value)))


def signed(signer: SM2PrivateKey, *, method: str = "POST", url: str = URL, body: bytes = BODY,
           headers: Sequence[tuple[str, str]] = HEADERS, now: datetime = NOW,
           extra: Sequence[str] = ()) -> Req:
    added = sign_request(method, url, headers, body, signer, now=now, extra_components=extra)
    return Req(method, url, (*headers, *added.items()), body)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sm3_digest_field(body: bytes) -> str:
    """RFC 9530 §2: Content-Digest as a structured dictionary, one sm3 byte-sequence member."""
    return f"sm3=:{b64(sm3(body))}:"


def signature_base(req: Req, covered: Sequence[str], params: str) -> str:
    """RFC 9421 §2.5, by hand, for derived components @method and @target-uri (whose value is
    the absolute URL, §2.2.2) and plain header fields (trimmed values joined by ", ", §2.1)."""
    lines = []
    for name in covered:
        if name == "@method":
            value = req.method
        elif name == "@target-uri":
            value = req.url
        else:
            value = ", ".join(v.strip() for n, v in req.headers if n.lower() == name)
        lines.append(f'"{name}": {value}')
    inner = "(" + " ".join(f'"{name}"' for name in covered) + ")" + params
    lines.append(f'"@signature-params": {inner}')
    return "\n".join(lines)


def hand_params(key_id: str, *, created: datetime = NOW, alg: str = ALGORITHM,
                nonce: str = "AAECAwQFBgcICQoLDA0ODw") -> str:
    return f';created={int(created.timestamp())};keyid="{key_id}";alg="{alg}";nonce="{nonce}"'


def hand_signed(signer: SM2PrivateKey, covered: Sequence[str], *, params: str | None = None,
                method: str = "POST", url: str = URL, body: bytes = BODY,
                headers: Sequence[tuple[str, str]] = HEADERS, label: str = "ts",
                digest: str | None = None) -> Req:
    """A request signed by this file's own RFC 9421 code, not the library's."""
    fields = (*headers, ("Content-Digest", digest or sm3_digest_field(body)))
    req = Req(method, url, fields, body)
    params = hand_params(signer.key_id) if params is None else params
    base = signature_base(req, covered, params)
    inner = "(" + " ".join(f'"{name}"' for name in covered) + ")" + params
    return replace(req, headers=(*fields, ("Signature-Input", f"{label}={inner}"),
                                 ("Signature", f"{label}=:{b64(signer.sign(base.encode()))}:")))


def flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def resolver(*keys: SM2PrivateKey) -> Callable[[str], SM2PublicKey | None]:
    return {k.key_id: k.public_key for k in keys}.get


def check(req: Req, *keys: SM2PrivateKey, nonces: MemoryNonceStore | None = None,
          now: datetime = NOW, required: Sequence[str] = ()) -> VerifiedRequest:
    store = nonces if nonces is not None else MemoryNonceStore(clock=lambda: now)
    return verify_request(req.method, req.url, req.headers, req.body, resolver(*keys), store,
                          now=now, max_skew=SKEW, required_components=required)


def refused(req: Req, reason: str, *keys: SM2PrivateKey, **kwargs: Any
            ) -> RequestSignatureError:
    with pytest.raises(RequestSignatureError) as info:
        check(req, *keys, **kwargs)
    assert info.value.reason == reason, info.value
    return info.value


ALL = ["@method", "@target-uri", "content-digest", "trustspace-credential"]


# ---- the wire format -----------------------------------------------------------------------

SIGNATURE_INPUT = re.compile(
    r'ts=\("@method" "@target-uri" "content-digest" "trustspace-credential"\)'
    r';created=(\d+);keyid="([0-9a-f]{64})";alg="sm2-sm3";nonce="([A-Za-z0-9_-]{22})"')


def test_sign_request_adds_three_standard_fields(keys: list[SM2PrivateKey]) -> None:
    added = sign_request("POST", URL, dict(HEADERS), BODY, keys[0], now=NOW)
    assert list(added) == ["Content-Digest", "Signature-Input", "Signature"]
    assert added["Content-Digest"] == sm3_digest_field(BODY)
    match = SIGNATURE_INPUT.fullmatch(added["Signature-Input"])
    assert match, added["Signature-Input"]
    assert int(match[1]) == int(NOW.timestamp())
    assert match[2] == keys[0].key_id
    assert len(base64.urlsafe_b64decode(match[3] + "==")) == 16  # 128-bit nonce
    assert re.fullmatch(r"ts=:[A-Za-z0-9+/]+=*:", added["Signature"])


def test_signature_base_is_rfc9421_section_2_5(keys: list[SM2PrivateKey]) -> None:
    """What sign_request signs is exactly the base RFC 9421 §2.5 describes, written out by hand;
    so any conforming RFC 9421 implementation with an SM2 verifier can check our requests."""
    req = signed(keys[0])
    params = req.header("Signature-Input").removeprefix("ts=")
    nonce = re.findall(r'nonce="([^"]+)"', params)[0]
    expected = (
        '"@method": POST\n'
        '"@target-uri": https://node-b.example/dsp/catalog/request?limit=10&offset=0\n'
        f'"content-digest": sm3=:{b64(sm3(BODY))}:\n'
        f'"trustspace-credential": {CREDENTIAL}\n'
        '"@signature-params": ("@method" "@target-uri" "content-digest" "trustspace-credential")'
        f';created={int(NOW.timestamp())};keyid="{keys[0].key_id}";alg="sm2-sm3";nonce="{nonce}"'
    )
    assert expected == signature_base(
        req, ["@method", "@target-uri", "content-digest", "trustspace-credential"],
        params[params.index(")") + 1:])
    signature = base64.b64decode(req.header("Signature").removeprefix("ts=:").removesuffix(":"))
    keys[0].public_key.verify(signature, expected.encode())  # GM/T 0009 default user ID


def test_hand_signed_request_is_accepted(keys: list[SM2PrivateKey]) -> None:
    """The other direction: a request signed by this file's own RFC 9421 code verifies."""
    covered = ["@method", "@target-uri", "content-digest", "trustspace-credential"]
    verified = check(hand_signed(keys[0], covered), keys[0])
    assert verified.key_id == keys[0].key_id
    assert verified.created == NOW
    assert verified.nonce == "AAECAwQFBgcICQoLDA0ODw"
    assert verified.components == tuple(covered)


@pytest.mark.interop
def test_openssl_verifies_the_signature_over_the_base(keys: list[SM2PrivateKey],
                                                      tmp_path: Path) -> None:
    req = signed(keys[0])
    params = req.header("Signature-Input").removeprefix("ts=")
    base = signature_base(req, ["@method", "@target-uri", "content-digest",
                                "trustspace-credential"], params[params.index(")") + 1:])
    (tmp_path / "base").write_bytes(base.encode())
    (tmp_path / "pub.pem").write_bytes(keys[0].public_key.to_pem())
    (tmp_path / "sig").write_bytes(
        base64.b64decode(req.header("Signature").removeprefix("ts=:").removesuffix(":")))
    result = subprocess.run(
        ["/usr/bin/openssl", "dgst", "-sm3", "-verify", "pub.pem", "-sigopt",
         "distid:1234567812345678", "-signature", "sig", "base"],
        cwd=tmp_path, capture_output=True, check=False, timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.strip() == b"Verified OK"


def test_round_trip_empty_body_and_extra_component(keys: list[SM2PrivateKey]) -> None:
    req = signed(keys[1], method="GET", body=b"",
                 headers=(("Accept", "application/json"), ("X-Trace", "t-1")), extra=["x-trace"])
    assert req.header("Content-Digest") == sm3_digest_field(b"")
    verified = check(req, keys[1], required=["x-trace"])
    assert verified.components == ("@method", "@target-uri", "content-digest", "x-trace")


def test_sign_request_replaces_existing_signature_fields(keys: list[SM2PrivateKey]) -> None:
    old = signed(keys[0])
    added = sign_request("POST", URL, old.headers, BODY, keys[1], now=NOW)
    assert added["Signature"] != old.header("Signature")
    headers = dict(old.headers)
    headers.update(added)  # what a client does with the result
    again = replace(old, headers=tuple(headers.items()))
    assert check(again, keys[1]).key_id == keys[1].key_id


@pytest.mark.parametrize("bad", [
    {"extra_components": ["x-absent"]},
    {"extra_components": ["@query"]},
    {"extra_components": ["signature"]},
    {"now": datetime(2026, 11, 26, 12, 0)},  # naive
])
def test_sign_request_refuses_caller_mistakes(keys: list[SM2PrivateKey],
                                              bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sign_request("POST", URL, HEADERS, BODY, keys[0], **bad)


@pytest.mark.parametrize("url", ["/relative/path", "https://node-b.example/a b"])
def test_sign_request_refuses_urls_it_cannot_sign(keys: list[SM2PrivateKey], url: str) -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        sign_request("POST", url, HEADERS, BODY, keys[0], now=NOW)


# ---- cross-checks with an independent RFC 9421 implementation (http-message-signatures) --------

class LibrarySM2(HTTPSignatureAlgorithm):
    """"sm2-sm3" for the library: signs with an SM2PrivateKey, verifies with an SM2PublicKey."""

    algorithm_id = ALGORITHM

    def __init__(self, public_key: Any = None, private_key: Any = None) -> None:
        self.public_key, self.private_key = public_key, private_key

    def sign(self, message: bytes) -> bytes:
        signature: bytes = self.private_key.sign(message)
        return signature

    def verify(self, signature: bytes, message: bytes) -> None:
        self.public_key.verify(signature, message)


class LibrarySM3Digest(ContentDigest):
    algorithm = "sm3"
    _hashers: ClassVar[dict[str, Callable[..., Any]]] = {"sm3": SM3}


class LibrarySigner(HTTPMessageSigner):
    content_digest_class = LibrarySM3Digest


class LibraryVerifier(HTTPMessageVerifier):
    content_digest_class = LibrarySM3Digest

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        """Freshness is verify_request's business (tested above); the library reads the wall
        clock, and these requests are signed at NOW."""


class FieldLines:
    """Header field lines in wire order, with the mapping interface the library reads (`items`)
    and writes (`[name] = value`, `del`) when it adds Content-Digest and Signature."""

    def __init__(self, lines: Sequence[tuple[str, str]]) -> None:
        self.lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return list(self.lines)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self.lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self.lines)

    def __setitem__(self, name: str, value: str) -> None:
        self.__delitem__(name)
        self.lines.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.lines = [(n, v) for n, v in self.lines if n.lower() != name.lower()]


@dataclass
class LibraryMessage:
    method: str
    url: str
    headers: FieldLines


def library_signed(signer: SM2PrivateKey, *, method: str = "POST", url: str = URL,
                   body: bytes = BODY, headers: Sequence[tuple[str, str]] = HEADERS,
                   covered: Sequence[str] = ALL) -> Req:
    """A request signed by the library, with the parameters sign_request uses."""
    message = LibraryMessage(method, url, FieldLines(headers))
    LibrarySigner(signature_algorithm=LibrarySM2, key_resolver=MappingKeyResolver(
        public_keys={}, private_keys={signer.key_id: signer})).sign(
        message, key_id=signer.key_id, created=NOW, nonce=new_nonce(), label=LABEL,
        covered_component_ids=covered, body=body)
    return Req(method, url, tuple(message.headers.lines), body)


def library_verify(req: Req, key: SM2PrivateKey, required: Sequence[str] = ALL) -> None:
    """The library's verdict on a request: signature, coverage and SM3 Content-Digest."""
    verifier = LibraryVerifier(signature_algorithm=LibrarySM2, key_resolver=MappingKeyResolver(
        public_keys={key.key_id: key.public_key}, private_keys={}))
    (result,) = verifier.verify(LibraryMessage(req.method, req.url, FieldLines(req.headers)),
                                max_age=None, require_components=required, body=req.body)
    assert result.label == LABEL
    assert result.parameters["keyid"] == key.key_id
    assert result.parameters["created"] == int(NOW.timestamp())


TRACE = ["x-trace"]
# RFC 9421 Appendix B-style requests, and the corners of §2.1 and §2.2.2.
EDGE_CASES = [
    pytest.param("POST", URL, HEADERS, BODY, (), id="catalog-request"),
    pytest.param("GET", "https://node-b.example/dsp/catalog?q=a%20b&x=%E6%95%B0&empty=&flag",
                 HEADERS, b"", (), id="query-percent-encoded-empty-body"),
    pytest.param("GET", "https://node-b.example/data%20set/%E6%95%B0%e6%8d%ae/./a/../b",
                 HEADERS, b"", (), id="path-percent-encoding-and-dot-segments-kept"),
    pytest.param("GET", "https://node-b.example/x?", HEADERS, b"", (), id="empty-query"),
    pytest.param("GET", "https://node-b.example", HEADERS, b"", (), id="no-path-is-slash"),
    pytest.param("OPTIONS", "https://node-b.example", HEADERS, b"", (), id="options-no-path"),
    pytest.param("PUT", "http://[::1]:8080/x?q=1", HEADERS, BODY, (), id="ipv6-and-port"),
    pytest.param("GET", "https://user:pw@Node-B.example:443/x#frag", HEADERS, b"", (),
                 id="userinfo-fragment-dropped-case-kept"),
    pytest.param("POST", URL, (*HEADERS, ("X-Trace", "a"), ("x-trace", "b")), BODY, TRACE,
                 id="repeated-field-lines"),
    pytest.param("POST", URL, (*HEADERS, ("X-Trace", " \t a,\r\n  b \t")), BODY, TRACE,
                 id="obs-fold-and-surrounding-whitespace"),
    pytest.param("POST", URL, (*HEADERS, ("X-Trace", "a \t\r\n\t b")), BODY, TRACE,
                 id="obs-fold-with-whitespace-before"),
    pytest.param("POST", URL, (*HEADERS, ("X-Trace", "a\tb  c")), BODY, TRACE,
                 id="inner-tab-and-spaces-kept"),
    pytest.param("POST", URL, (*HEADERS, ("X-Trace", "")), BODY, TRACE, id="empty-field"),
    pytest.param("POST", URL, (("content-type", "application/json"),
                               ("TRUSTSPACE-Credential", CREDENTIAL)), BODY, (),
                 id="field-name-case"),
    pytest.param("PATCH", URL, HEADERS, bytes(range(256)) * 256, (), id="64-kib-binary-body"),
]


@pytest.mark.interop
@pytest.mark.parametrize(("method", "url", "headers", "body", "extra"), EDGE_CASES)
def test_library_verifies_what_we_sign(keys: list[SM2PrivateKey], method: str, url: str,
                                       headers: Sequence[tuple[str, str]], body: bytes,
                                       extra: Sequence[str]) -> None:
    req = signed(keys[0], method=method, url=url, headers=headers, body=body, extra=extra)
    library_verify(req, keys[0], [*ALL, *extra])
    check(req, keys[0])
    # ... and only that request: a changed body or header fails there too.
    with pytest.raises(HTTPMessageSignaturesException):
        library_verify(replace(req, body=body + b"x"), keys[0])
    with pytest.raises(HTTPMessageSignaturesException):
        library_verify(req.with_header(CREDENTIAL_HEADER, "other"), keys[0])


@pytest.mark.interop
@pytest.mark.parametrize(("method", "url", "headers", "body", "extra"), EDGE_CASES)
def test_we_verify_what_the_library_signs(keys: list[SM2PrivateKey], method: str, url: str,
                                          headers: Sequence[tuple[str, str]], body: bytes,
                                          extra: Sequence[str]) -> None:
    req = library_signed(keys[0], method=method, url=url, headers=headers, body=body,
                         covered=[*ALL, *extra])
    assert check(req, keys[0], required=extra).components == (*ALL, *extra)
    refused(replace(req, body=body + b"x"), "digest-mismatch", keys[0])
    refused(req.with_header(CREDENTIAL_HEADER, "other"), "bad-signature", keys[0])


@pytest.mark.interop
@pytest.mark.parametrize("covered", [
    pytest.param([*ALL, '"content-digest";sf'], id="sf"),
    pytest.param([*ALL, '"content-digest";key="sm3"'], id="key"),
    pytest.param([*ALL, '"x-trace";bs'], id="bs"),
    pytest.param([*ALL, "@authority"], id="authority"),
    pytest.param([*ALL, '"@query-param";name="limit"'], id="query-param"),
    pytest.param(["@method", "@target-uri", '"content-digest";sf', CREDENTIAL_HEADER],
                 id="digest-only-as-sf"),
])
def test_components_we_do_not_support_are_refused(keys: list[SM2PrivateKey],
                                                  covered: list[str]) -> None:
    """Valid RFC 9421 signatures the library makes and checks, but over components whose
    meaning this node does not implement: refused, never verified with the part ignored."""
    req = library_signed(keys[0], headers=(*HEADERS, ("X-Trace", "t")), covered=covered)
    library_verify(req, keys[0], required=())
    error = refused(req, "malformed-signature", keys[0])
    assert error.key_id == keys[0].key_id  # judged after the algorithm and the key id


@pytest.mark.parametrize(("component", "foreign"), [
    ('"@method";req', "unsupported-algorithm"),
    ('"@target-uri";x=?0', "unsupported-algorithm"),
    ('"@path"', "unsupported-algorithm"),
    ('"a b"', "unsupported-algorithm"),
    # Not a component id at all (RFC 9421 §2: lowercase; §2.3 reserves this name): parse.
    ('"X-Trace"', "malformed-signature"),
    ('"@signature-params"', "malformed-signature"),
])
def test_component_ids_we_do_not_sign_are_malformed(keys: list[SM2PrivateKey], component: str,
                                                    foreign: str) -> None:
    req = signed(keys[0])
    mangled = req.header("Signature-Input").replace('"@method"', component)
    refused(req.with_header("Signature-Input", mangled), "malformed-signature", keys[0])
    # Supported components are judged after the algorithm: a foreign signature is reported as
    # such, whatever it covers.
    alien = mangled.replace('alg="sm2-sm3"', 'alg="ed25519"')
    refused(req.with_header("Signature-Input", alien), foreign, keys[0])


URL_STARTS = ["https://node-b.example", "http://[::1]:8080", "https://u:p@h", "https://",
              "http://[fe80::1%25eth0]", "http://[v1.x:y]", "http://[::g]", "http://[1:2:3]",
              "http://[::1::2]", "http://[1.2.3.4]", "x-y.z://h", "1x://h", "https:/h",
              "HTTPS://H", "https://h:"]
URL_CHARS = st.sampled_from(list("aZ09-._~!$&'()*+,;=:@/?#[]% \"<>\\^`{|}\té") + ["%2F", "%zz"])
VALUE_CHARS = st.sampled_from(list("a Z0~\t\"\\,;=()\x00\x7f\r\né") + ["\r\n ", "\r\n\t"])


@pytest.mark.interop
@settings(max_examples=200)
@given(method=st.sampled_from(["GET", "OPTIONS", "get", " POST", "PO ST", "", "GÉT"]),
       start=st.sampled_from(URL_STARTS), rest=st.lists(URL_CHARS, max_size=12),
       value=st.lists(VALUE_CHARS, max_size=8))
def test_we_sign_exactly_what_the_library_signs(keys: list[SM2PrivateKey], method: str,
                                                start: str, rest: list[str],
                                                value: list[str]) -> None:
    """For arbitrary methods, URLs and header values: our sign_request refuses exactly what the
    library's signer refuses, and what both sign, each verifies from the other."""
    url = start + "".join(rest)
    headers = (*HEADERS, ("X-Trace", "".join(value)))
    try:
        ours: Req | None = signed(keys[0], method=method, url=url, headers=headers, extra=TRACE)
    except ValueError:
        ours = None
    try:
        theirs: Req | None = library_signed(keys[0], method=method, url=url, headers=headers,
                                            covered=[*ALL, *TRACE])
    except HTTPMessageSignaturesException:
        theirs = None
    assert (ours is None) == (theirs is None), (ours, theirs)
    if ours is not None and theirs is not None:
        library_verify(ours, keys[0], [*ALL, *TRACE])
        check(theirs, keys[0], required=TRACE)


SF_NOISE = st.sampled_from([" ", "\t", ",", ";", "(", ")", '"', "=", "\\", ":", "a", "A", "1",
                            "-", ".", "?1", "*", "/", "+", "=="])


def mutate(data: st.DataObject, text: str) -> str:
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:pos] + data.draw(SF_NOISE) + text[pos:]
        else:
            text = text[:pos] + text[pos + 1:]
    return text


@pytest.fixture(scope="module")
def one_request(keys: list[SM2PrivateKey]) -> Req:
    """Signed once: SM2 signatures are randomized, and hypothesis needs each example to
    behave the same when it replays it."""
    return signed(keys[0])


def sf_reference(value: str) -> str | None:
    """http_sf's strict RFC 8941 reading of a dictionary, re-serialized (so types count: a
    Token is not a String); None if it refuses it or has a key twice, as we do."""
    def duplicate(key: str, context: str) -> None:
        raise ValueError(f"duplicate {key}")

    try:
        parsed = http_sf.parse(value.strip(" \t").encode("latin-1"), tltype="dictionary",
                               on_duplicate_key=duplicate)
        return str(http_sf.ser(parsed))
    except ValueError:
        return None


@pytest.mark.interop
@given(data=st.data(), field=st.sampled_from(["Signature-Input", "Signature"]))
def test_parsing_agrees_with_http_sf(keys: list[SM2PrivateKey], one_request: Req,
                                     data: st.DataObject, field: str) -> None:
    """Signature-Input and Signature, mangled: what http_sf refuses is malformed, what it reads
    as the original verifies (however spaced or padded), anything else is refused."""
    req = one_request
    original = req.header(field)
    mangled = mutate(data, original)
    reference = sf_reference(mangled)
    mangled_req = req.with_header(field, mangled)
    if reference is None:
        refused(mangled_req, "malformed-signature", keys[0])
    elif reference == sf_reference(original):
        check(mangled_req, keys[0])
    else:
        with pytest.raises(RequestSignatureError):
            check(mangled_req, keys[0])


# ---- refusals ------------------------------------------------------------------------------

def test_missing_signature(keys: list[SM2PrivateKey]) -> None:
    refused(Req("POST", URL, HEADERS, BODY), "missing-signature", keys[0])


def respelled(field: str, old: str, new: str, count: int = 1) -> Callable[[Req], Req]:
    def mangle(req: Req) -> Req:
        value = req.header(field)
        assert old in value
        return req.with_header(field, value.replace(old, new, count))
    return mangle


def signature_bytes(suffix: str) -> Callable[[Req], Req]:
    """The Signature member's base64 without its padding, then `suffix` (and the closing ':')."""
    def mangle(req: Req) -> Req:
        return req.with_header("Signature", req.header("Signature")[:-1].rstrip("=") + suffix)
    return mangle


@pytest.mark.parametrize("mangle", [
    pytest.param(respelled("Signature-Input", "(", "(  "), id="spaces-after-paren"),
    pytest.param(respelled("Signature-Input", '" "', '"   "', 3), id="spaces-between-items"),
    pytest.param(respelled("Signature-Input", ")", "  )"), id="spaces-before-paren"),
    pytest.param(respelled("Signature-Input", ";", ";  ", 4), id="spaces-after-semicolons"),
    pytest.param(respelled("Signature-Input", "ts=", "  ts="), id="leading-spaces"),
    pytest.param(signature_bytes(":"), id="signature-without-padding"),
])
def test_equivalent_spellings_verify(keys: list[SM2PrivateKey],
                                     mangle: Callable[[Req], Req]) -> None:
    """RFC 8941 allows these spellings; the base holds the canonical serialization (RFC 9421
    §2.3), so they verify."""
    assert check(mangle(signed(keys[0])), keys[0]).key_id == keys[0].key_id


@pytest.mark.parametrize("mangle", [
    pytest.param(respelled("Signature-Input", '" "', '"\t"'), id="tab-between-items"),
    pytest.param(respelled("Signature-Input", ";", " ;"), id="space-before-semicolon"),
    pytest.param(respelled("Signature-Input", "ts=", "ts ="), id="space-before-equals"),
    pytest.param(respelled("Signature-Input", "(", "(\t"), id="tab-after-paren"),
    pytest.param(lambda r: respelled("Signature", "ts=", "Ts=")(
        respelled("Signature-Input", "ts=", "Ts=")(r)), id="uppercase-label"),
    pytest.param(respelled("Signature-Input", '"sm2-sm3"', "sm2-sm3"), id="alg-as-token"),
    pytest.param(respelled("Signature-Input", ";alg=", ";x=1.5;alg="), id="decimal-parameter"),
    pytest.param(respelled("Signature-Input", ";alg=", ";x=:AAAA:;alg="), id="bytes-parameter"),
    pytest.param(respelled("Signature-Input", "created=", "created=1000000"),
                 id="sixteen-digit-integer"),
    pytest.param(respelled("Signature-Input", '"@method"', '"@me\thod"'), id="bad-escape"),
    pytest.param(respelled("Signature-Input", '"@method"', '"@method'), id="unterminated"),
    pytest.param(lambda r: r.with_header("Signature-Input", r.header("Signature-Input") + ","),
                 id="trailing-comma"),
    pytest.param(lambda r: r.with_header("Signature-Input", r.header("Signature-Input") + " x"),
                 id="trailing-text"),
    pytest.param(lambda r: r.with_header("Signature-Input", "ts"), id="boolean-member"),
    pytest.param(signature_bytes("===:"), id="three-padding-characters"),
    pytest.param(lambda r: r.with_header("Signature", re.sub(
        r":([^:=]*)=*:", lambda m: ":" + m[1] + "A" * ((1 - len(m[1])) % 4) + ":",
        r.header("Signature"))), id="bad-base64-length"),
    pytest.param(signature_bytes("!:"), id="not-base64"),
    pytest.param(lambda r: r.with_header("Signature", "ts=::"), id="empty-signature"),
    pytest.param(lambda r: r.with_header("Signature", r.header("Signature") + ";x"),
                 id="signature-with-parameter"),
    pytest.param(lambda r: r.with_header("Signature", r.header("Signature")[:-1]),
                 id="signature-unterminated"),
])
def test_spellings_rfc_8941_or_we_refuse(keys: list[SM2PrivateKey],
                                         mangle: Callable[[Req], Req]) -> None:
    refused(mangle(signed(keys[0])), "malformed-signature", keys[0])


@pytest.mark.parametrize("mangle", [
    pytest.param(lambda r: r.with_header("Signature-Input", 'ts=("@method" "@target-uri"'),
                 id="unterminated-inner-list"),
    pytest.param(lambda r: r.with_header("Signature-Input", "ts=?1"), id="not-an-inner-list"),
    pytest.param(lambda r: r.with_header("Signature", 'ts="not bytes"'), id="signature-not-bytes"),
    pytest.param(lambda r: r.without("Signature"), id="signature-field-missing"),
    pytest.param(lambda r: r.with_header("Signature-Input",
                                         r.header("Signature-Input").replace("ts=", "tx=")),
                 id="labels-differ"),
    pytest.param(lambda r: r.with_header(
        "Signature-Input", r.header("Signature-Input") + ", " + r.header("Signature-Input")),
                 id="duplicate-label"),
    pytest.param(lambda r: r.with_header(
        "Signature-Input", r.header("Signature-Input").replace(";alg=", ";created=1;alg=")),
                 id="duplicate-parameter"),
    pytest.param(lambda r: r.with_header(
        "Signature-Input", r.header("Signature-Input") + ";expires=1900000000"),
                 id="unexpected-parameter"),
    pytest.param(lambda r: r.with_header(
        "Signature-Input", re.sub(r'nonce="[^"]+"', 'nonce="short"', r.header("Signature-Input"))),
                 id="short-nonce"),
    pytest.param(lambda r: r.with_header(
        "Signature-Input", re.sub(r";nonce=\"[^\"]+\"", "", r.header("Signature-Input"))),
                 id="no-nonce"),
    pytest.param(lambda r: r.with_header(
        "Signature-Input", re.sub(r'keyid="[^"]+"', 'keyid="alice"', r.header("Signature-Input"))),
                 id="keyid-not-a-key-id"),
    pytest.param(lambda r: r.with_header(
        "Signature-Input", re.sub(r";alg=\"[^\"]+\"", "", r.header("Signature-Input"))),
                 id="no-alg"),
    pytest.param(lambda r: r.with_header(
        "Signature-Input", r.header("Signature-Input").replace('"@method"', '"@method" "@method"')),
                 id="component-twice"),
    pytest.param(lambda r: r.with_header(
        "Signature-Input", re.sub(r"created=\d+", 'created="now"', r.header("Signature-Input"))),
                 id="created-not-integer"),
])
def test_malformed_signature(keys: list[SM2PrivateKey], mangle: Callable[[Req], Req]) -> None:
    refused(mangle(signed(keys[0])), "malformed-signature", keys[0])


def test_two_signatures_are_malformed(keys: list[SM2PrivateKey]) -> None:
    """Two labels, as repeated field lines (RFC 9110 combines them): one signer per request."""
    a = signed(keys[0])
    b = signed(keys[1], headers=a.without("Signature-Input").without("Signature").headers)
    both = a.adding("Signature-Input", b.header("Signature-Input").replace("ts=", "other=")) \
        .adding("Signature", b.header("Signature").replace("ts=", "other="))
    error = refused(both, "malformed-signature", keys[0], keys[1])
    assert "exactly one signature" in error.detail


def test_foreign_algorithm_from_the_library(keys: list[SM2PrivateKey]) -> None:
    """A genuine RFC 9421 ed25519 signature, made by the library's own ED25519 algorithm."""
    private = ed25519.Ed25519PrivateKey.generate()
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={"ed": private}))
    message = httpx.Request("POST", URL, content=BODY)
    signer.sign(message, key_id="ed", created=NOW, label="ts",
                covered_component_ids=("@method", "@target-uri"), body=BODY)
    req = Req("POST", URL, tuple(message.headers.multi_items()), BODY)
    error = refused(req, "unsupported-algorithm", keys[0])
    assert "ed25519" in error.detail


def test_foreign_algorithm_name(keys: list[SM2PrivateKey]) -> None:
    covered = ["@method", "@target-uri", "content-digest", "trustspace-credential"]
    req = hand_signed(keys[0], covered, params=hand_params(keys[0].key_id, alg="hmac-sha256"))
    refused(req, "unsupported-algorithm", keys[0])


def test_unknown_key(keys: list[SM2PrivateKey]) -> None:
    refused(signed(keys[0]), "unknown-key", keys[1])


def test_resolver_returning_another_key_is_unknown_key(keys: list[SM2PrivateKey]) -> None:
    req = signed(keys[0])
    with pytest.raises(RequestSignatureError) as info:
        verify_request(req.method, req.url, req.headers, req.body,
                       lambda _kid: keys[1].public_key, MemoryNonceStore(), now=NOW)
    assert info.value.reason == "unknown-key"


@pytest.mark.parametrize("mangle", [
    pytest.param(lambda r: replace(r, method="PUT"), id="method"),
    pytest.param(lambda r: replace(r, url=r.url.replace("/request", "/requests")), id="path"),
    pytest.param(lambda r: replace(r, url=r.url.replace("limit=10", "limit=10000")), id="query"),
    pytest.param(lambda r: replace(r, url=r.url.replace("?limit=10&offset=0", "")),
                 id="query-dropped"),
    pytest.param(lambda r: replace(r, url=r.url.replace("node-b", "node-c")),
                 id="other-node"),
    pytest.param(lambda r: replace(r, url=r.url.replace("https:", "http:")), id="scheme"),
    pytest.param(lambda r: r.with_header(CREDENTIAL_HEADER, CREDENTIAL + "x"), id="credential"),
    pytest.param(lambda r: replace(r.with_header("Content-Digest", sm3_digest_field(b"{}")),
                                   body=b"{}"),
                 id="body-and-digest-replaced"),
    pytest.param(lambda r: r.with_header("Signature-Input", re.sub(
        r"created=(\d+)", lambda m: f"created={int(m[1]) + 1}", r.header("Signature-Input"))),
                 id="created"),
    pytest.param(lambda r: r.with_header("Signature", "ts=:" + b64(flip_last_bit(
        base64.b64decode(r.header("Signature")[4:-1]))) + ":"),
                 id="signature-bits"),
    pytest.param(lambda r: r.with_header("Signature", "ts=:AAAA:"), id="signature-not-der"),
])
def test_bad_signature(keys: list[SM2PrivateKey], mangle: Callable[[Req], Req]) -> None:
    refused(mangle(signed(keys[0])), "bad-signature", keys[0])


def test_wrong_key_claiming_anothers_key_id(keys: list[SM2PrivateKey]) -> None:
    """Signed with key 1, but naming key 0: key 0 does not verify it."""
    req = hand_signed(keys[1], ALL, params=hand_params(keys[0].key_id))
    refused(req, "bad-signature", keys[0], keys[1])


def test_stale_and_future(keys: list[SM2PrivateKey]) -> None:
    req = signed(keys[0])
    refused(req, "stale", keys[0], now=NOW + SKEW + timedelta(seconds=1))
    refused(req, "future", keys[0], now=NOW - SKEW - timedelta(seconds=1))
    # The window's edges are inside it.
    check(req, keys[0], now=NOW + SKEW)
    check(req, keys[0], now=NOW - SKEW)
    # Times no calendar holds.
    far = f';created=99999999999999;keyid="{keys[0].key_id}";alg="sm2-sm3";nonce="{"A" * 22}"'
    refused(hand_signed(keys[0], ALL, params=far), "future", keys[0])
    refused(hand_signed(keys[0], ALL, params=far.replace("=99999999999999", "=-99999999999999")),
            "stale", keys[0])


def test_replayed_nonce(keys: list[SM2PrivateKey]) -> None:
    store = MemoryNonceStore(clock=lambda: NOW)
    req = signed(keys[0])
    check(req, keys[0], nonces=store)
    refused(req, "replayed-nonce", keys[0], nonces=store)
    # The same nonce from another key is another pair.
    other = hand_signed(keys[1], ALL)
    check(other, keys[1], nonces=store)
    check(hand_signed(keys[2], ALL), keys[2], nonces=store)
    refused(other, "replayed-nonce", keys[1], nonces=store)


def test_forged_request_does_not_burn_the_nonce(keys: list[SM2PrivateKey]) -> None:
    store = MemoryNonceStore(clock=lambda: NOW)
    req = signed(keys[0])
    refused(replace(req, body=b"forged"), "digest-mismatch", keys[0], nonces=store)
    refused(replace(req, method="DELETE"), "bad-signature", keys[0], nonces=store)
    refused(req, "stale", keys[0], nonces=store, now=NOW + 2 * SKEW)
    refused(req, "missing-component", keys[0], nonces=store, required=["x-other"])
    assert len(store) == 0
    check(req, keys[0], nonces=store)
    assert len(store) == 1


def test_missing_digest_header_stripped(keys: list[SM2PrivateKey]) -> None:
    refused(signed(keys[0]).without("Content-Digest"), "missing-digest", keys[0])


def test_missing_digest_not_covered(keys: list[SM2PrivateKey]) -> None:
    req = hand_signed(keys[0], ["@method", "@target-uri", "trustspace-credential"])
    refused(req, "missing-digest", keys[0])
    refused(req.without("Content-Digest"), "missing-digest", keys[0])
    empty = hand_signed(keys[0], ["@method", "@target-uri", "trustspace-credential"], body=b"")
    refused(empty.without("Content-Digest"), "missing-digest", keys[0])


@pytest.mark.parametrize("body", [BODY + b" ", b"", BODY[:-1], BODY.upper()])
def test_digest_mismatch_tampered_body(keys: list[SM2PrivateKey], body: bytes) -> None:
    refused(replace(signed(keys[0]), body=body), "digest-mismatch", keys[0])


def test_digest_mismatch_empty_body_checked_too(keys: list[SM2PrivateKey]) -> None:
    refused(replace(signed(keys[0], body=b""), body=b"x"), "digest-mismatch", keys[0])


@pytest.mark.parametrize("digest", [
    "sha-256=:" + b64(b"\x00" * 32) + ":",  # no sm3 member: not an SM3 digest of this body
    f"sm3=:{b64(sm3(BODY))}:, sha-256=:" + b64(b"\x00" * 32) + ":",  # one member unchecked
    "sm3=:" + b64(sm3(BODY)[:16]) + ":",  # truncated
    "sm3=?1",
])
def test_digest_mismatch_other_digests(keys: list[SM2PrivateKey], digest: str) -> None:
    refused(hand_signed(keys[0], ALL, digest=digest), "digest-mismatch", keys[0])


def test_uncovered_credential_header_is_refused(keys: list[SM2PrivateKey]) -> None:
    """A credential the signature does not cover could have been put there by anyone."""
    req = hand_signed(keys[0], ["@method", "@target-uri", "content-digest"])
    error = refused(req, "missing-component", keys[0])
    assert CREDENTIAL_HEADER in error.detail
    # ... also when the signer covers it, but an intermediary adds a second one.
    refused(signed(keys[0]).adding("Trustspace-Credential", "eyJ9"), "bad-signature", keys[0])


def test_required_component_absent(keys: list[SM2PrivateKey]) -> None:
    req = signed(keys[0], headers=(("Content-Type", "application/json"),))
    refused(req, "missing-component", keys[0], required=[CREDENTIAL_HEADER])
    refused(req, "missing-component", keys[0], required=["X-Trace"])
    check(req, keys[0], required=["content-digest", "@method"])


def test_target_uri_and_method_must_be_covered(keys: list[SM2PrivateKey]) -> None:
    refused(hand_signed(keys[0], ["@method", "content-digest", "trustspace-credential"]),
            "missing-component", keys[0])
    refused(hand_signed(keys[0], ["@target-uri", "content-digest", "trustspace-credential"]),
            "missing-component", keys[0])


def test_refusal_names_the_key(keys: list[SM2PrivateKey]) -> None:
    error = refused(replace(signed(keys[0]), body=b""), "digest-mismatch", keys[0])
    assert error.key_id == keys[0].key_id
    assert str(error).startswith("digest-mismatch: ")


def test_unknown_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        RequestSignatureError("nope", "")  # type: ignore[arg-type]


@pytest.mark.parametrize(("scope", "url"), [
    ({"scheme": "https", "server": ("node-b.example", 443), "headers": [],
      "path": "/a b", "query_string": b""}, "https://node-b.example/a%20b"),
    ({"scheme": "http", "server": ("::1", 8080), "headers": [],
      "path": "/x", "raw_path": b"/x", "query_string": b"q=1"}, "http://[::1]:8080/x?q=1"),
    ({"scheme": "http", "server": ("10.0.0.1", 80), "headers": [(b"host", b"node-b.test:80")],
      "path": "/\u6570", "raw_path": b"/%E6%95%B0", "query_string": b""},
     "http://node-b.test:80/%E6%95%B0"),
])
def test_asgi_request_url(scope: dict[str, Any], url: str) -> None:
    assert asgi_request_url(scope) == url


def test_asgi_request_url_needs_a_host() -> None:
    with pytest.raises(ValueError):
        asgi_request_url({"scheme": "http", "headers": [], "path": "/"})


def test_headers_as_mapping_and_raw_bytes(keys: list[SM2PrivateKey]) -> None:
    req = signed(keys[0])
    as_dict = dict(req.headers)
    raw = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in req.headers]
    check(replace(req, headers=tuple(as_dict.items())), keys[0])
    assert verify_request(req.method, req.url, raw, req.body, resolver(keys[0]),
                          MemoryNonceStore(clock=lambda: NOW), now=NOW).key_id == keys[0].key_id


# ---- property tests ------------------------------------------------------------------------

segments = st.lists(st.text(max_size=12), max_size=4)
# Through a real client, dot segments are resolved before signing (RFC 3986 §5.2.4), which
# could move the path out of /raw/; function-level round trips keep them.
plain_segments = st.lists(st.text(max_size=12).filter(lambda s: s not in {".", ".."}),
                          max_size=4)
queries = st.lists(st.tuples(st.text(max_size=6), st.text(max_size=8)), max_size=3)
methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"])


def url_of(path: Sequence[str], query: Sequence[tuple[str, str]]) -> str:
    url = "https://node-b.example/" + "/".join(quote(s, safe="") for s in path)
    return url + ("?" + urlencode(query) if query else "")


@given(body=st.binary(max_size=2048), path=segments, query=queries, method=methods)
def test_round_trip_arbitrary_requests(keys: list[SM2PrivateKey], body: bytes,
                                       path: list[str], query: list[tuple[str, str]],
                                       method: str) -> None:
    req = signed(keys[0], method=method, url=url_of(path, query), body=body)
    verified = check(req, keys[0])
    assert verified.key_id == keys[0].key_id
    flipped = (body[:1] if body else b"x") + b"\x00" + body[1:]
    refused(replace(req, body=flipped), "digest-mismatch", keys[0])


# ---- the in-memory nonce store -------------------------------------------------------------

class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_nonce_store_expiry_and_prune() -> None:
    clock = Clock(NOW)
    store = MemoryNonceStore(clock=clock)
    assert store.remember("k", "n", NOW + SKEW)
    assert not store.remember("k", "n", NOW + SKEW)
    assert store.remember("k2", "n", NOW + SKEW)
    clock.now = NOW + SKEW  # the last moment a request could still be fresh: still held
    assert not store.remember("k", "n", NOW + SKEW)
    clock.now = NOW + SKEW + timedelta(microseconds=1)
    assert len(store) == 0
    assert store.remember("k", "n", clock.now + SKEW)
    assert store.remember("k", "old", NOW)  # already expired: nothing to hold
    assert len(store) == 1


def test_nonce_store_refuses_when_full_rather_than_forgetting() -> None:
    clock = Clock(NOW)
    store = MemoryNonceStore(max_entries=2, clock=clock)
    assert store.remember("k", "a", NOW + SKEW)
    assert store.remember("k", "b", NOW + 2 * SKEW)
    with pytest.raises(NonceStoreFull):
        store.remember("k", "c", NOW + SKEW)
    assert not store.remember("k", "a", NOW + SKEW)  # still remembered
    clock.now = NOW + SKEW + timedelta(seconds=1)  # "a" expires, freeing one place
    assert store.remember("k", "c", clock.now + SKEW)
    with pytest.raises(ValueError):
        MemoryNonceStore(max_entries=0)


def test_nonce_store_full_propagates_from_verify(keys: list[SM2PrivateKey]) -> None:
    store = MemoryNonceStore(max_entries=1, clock=lambda: NOW)
    check(signed(keys[0]), keys[0], nonces=store)
    with pytest.raises(NonceStoreFull):
        check(signed(keys[0]), keys[0], nonces=store)


def test_nonce_store_threads_accept_a_nonce_once() -> None:
    store = MemoryNonceStore(clock=lambda: NOW)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for i in range(200):
            results.append(store.remember("k", f"n{i}", NOW + SKEW))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 200
    assert len(store) == 200


# ---- real clients against real servers -----------------------------------------------------

def make_app(keys: Sequence[SM2PrivateKey], nonces: MemoryNonceStore) -> ASGIApp:
    """A tiny node: verifies every request, answers with what it proved.

    /str/... verifies against `str(request.url)` (what Starlette offers), /raw/... against
    `asgi_request_url(request.scope)` (the path bytes as received)."""
    resolve = resolver(*keys)

    async def endpoint(request: Request) -> JSONResponse:
        body = await request.body()
        url = asgi_request_url(request.scope) if request.url.path.startswith("/raw/") \
            else str(request.url)
        required = (CREDENTIAL_HEADER,) if "need-credential" in request.query_params else ()
        try:
            verified = verify_request(request.method, url, request.headers.raw, body, resolve,
                                      nonces, required_components=required)
        except RequestSignatureError as exc:
            return JSONResponse({"error": exc.reason, "detail": exc.detail}, status_code=401)
        return JSONResponse({"key_id": verified.key_id, "components": list(verified.components),
                             "url": url, "body_sm3": sm3(body).hex()})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # No router: Starlette's path patterns do not match every path (a %0A, for one).
        request = Request(scope, receive)
        response = await endpoint(request)
        await response(scope, receive, send)

    return app


def test_asgi_round_trip_async_client(keys: list[SM2PrivateKey]) -> None:
    app = make_app(keys[:2], MemoryNonceStore())

    async def scenario() -> None:
        captured: list[httpx.Request] = []

        async def capture(request: httpx.Request) -> None:
            captured.append(request)

        async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://node-b.test",
                auth=SM2RequestAuth(keys[0], extra_components=[CREDENTIAL_HEADER]),
                headers={"Trustspace-Credential": CREDENTIAL},
                event_hooks={"request": [capture]}) as client:
            r = await client.post("/raw/dsp/negotiations?need-credential=1", json={"offer": 1})
            assert r.status_code == 200, r.text
            assert r.json()["key_id"] == keys[0].key_id
            assert r.json()["components"] == ALL
            assert r.json()["body_sm3"] == sm3(b'{"offer":1}').hex()

            r = await client.get("/str/dsp/catalog")  # empty body, via str(request.url)
            assert r.status_code == 200, r.text

            # A replay of a captured request, sent without signing it again.
            sent = captured[0]
            replay = await client.post(str(sent.url), content=sent.content,
                                       headers=dict(sent.headers), auth=None)
            assert replay.status_code == 401
            assert replay.json()["error"] == "replayed-nonce"

            # Unsigned, and signed by an unknown member.
            r = await client.get("/raw/x", auth=None)
            assert r.json()["error"] == "missing-signature"
            r = await client.get("/raw/x", auth=SM2RequestAuth(keys[2]))
            assert r.json()["error"] == "unknown-key"

        # A man in the middle rewrites the query after signing.
        async def tamper(request: httpx.Request) -> None:
            request.url = request.url.copy_with(query=b"limit=1000000")

        async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://node-b.test",
                auth=SM2RequestAuth(keys[1]), event_hooks={"request": [tamper]}) as client:
            r = await client.get("/raw/dsp/catalog?limit=10")
            assert r.status_code == 401
            assert r.json()["error"] == "bad-signature"

    asyncio.run(scenario())


def test_asgi_percent_encoded_path_needs_the_raw_path(keys: list[SM2PrivateKey]) -> None:
    """Starlette's str(request.url) percent-decodes the path; asgi_request_url does not."""
    app = make_app(keys[:1], MemoryNonceStore())

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://node-b.test",
                                     auth=SM2RequestAuth(keys[0])) as client:
            return (await client.get("/raw/data%20set/%E6%95%B0%E6%8D%AE"),
                    await client.get("/str/data%20set/%E6%95%B0%E6%8D%AE"))

    raw, decoded = asyncio.run(scenario())
    assert raw.status_code == 200, raw.text
    assert raw.json()["url"] == "http://node-b.test/raw/data%20set/%E6%95%B0%E6%8D%AE"
    assert decoded.status_code == 401
    assert decoded.json()["error"] == "bad-signature"


@settings(max_examples=25)
@given(body=st.binary(max_size=512), path=plain_segments, query=queries, method=methods)
def test_asgi_round_trip_arbitrary_paths(keys: list[SM2PrivateKey], body: bytes,
                                         path: list[str], query: list[tuple[str, str]],
                                         method: str) -> None:
    app = make_app(keys[:1], MemoryNonceStore())
    url = url_of(["raw", *path], query).replace("https://node-b.example", "http://node-b.test")

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     auth=SM2RequestAuth(keys[0])) as client:
            return await client.request(method, url, content=body)

    response = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    assert response.json()["body_sm3"] == sm3(body).hex()


@pytest.fixture(scope="module")
def live_node(keys: list[SM2PrivateKey]) -> Iterator[str]:
    """A real uvicorn server on a loopback port, in a background thread."""
    config = uvicorn.Config(make_app(keys[:2], MemoryNonceStore()), host="127.0.0.1", port=0,
                            log_level="warning", lifespan="off", ws="none", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_uvicorn_round_trip_sync_client(keys: list[SM2PrivateKey], live_node: str) -> None:
    auth = SM2RequestAuth(keys[1], extra_components=[CREDENTIAL_HEADER])
    with httpx.Client(base_url=live_node, auth=auth,
                      headers={"Trustspace-Credential": CREDENTIAL}) as client:
        r = client.post("/str/dsp/transfers/start?need-credential=1", content=b"\x00\x01" * 512)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "key_id": keys[1].key_id, "components": ALL,
            "url": f"{live_node}/str/dsp/transfers/start?need-credential=1",
            "body_sm3": sm3(b"\x00\x01" * 512).hex(),
        }
        assert client.delete("/str/dsp/transfers/1").status_code == 200
        assert client.get("/raw/data%20set").status_code == 200

    with httpx.Client(base_url=live_node, auth=SM2RequestAuth(keys[0])) as client:
        # The route requires the credential, but this client does not send one.
        r = client.get("/str/x?need-credential=1")
        assert r.status_code == 401
        assert r.json()["error"] == "missing-component"

    with httpx.Client(base_url=live_node, auth=SM2RequestAuth(keys[3])) as client:
        r = client.get("/str/x")
        assert r.status_code == 401
        assert r.json()["error"] == "unknown-key"
