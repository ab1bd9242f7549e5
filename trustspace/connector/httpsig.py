"""Signed node-to-node requests: RFC 9421 HTTP Message Signatures with SM2, and an RFC 9530
Content-Digest computed with SM3.

Every request one node sends another carries three header fields (one signature, label "ts")::

    Content-Digest: sm3=:<base64 SM3 of the body, also for an empty body>:
    Signature-Input: ts=("@method" "@target-uri" "content-digest" "trustspace-credential")\
;created=1767225600;keyid="<64 hex: SM3 of the sender's SPKI>";alg="sm2-sm3";nonce="<22 base64url>"
    Signature: ts=:<base64 DER SM2 signature (r, s)>:

The signature base is built by the http-message-signatures package (RFC 9421 §2.5), not here.
"sm2-sm3" is an application-specific algorithm (RFC 9421 §6.2): SM2 over SM3(Z ‖ base) with the
GM/T 0009 default user ID, the signature DER-encoded as GM/T 0009-2012 §7.2 and trustspace's
signed documents do, so `openssl dgst -sm3 -verify pub.pem -sigopt distid:1234567812345678` checks
it against the base bytes. "sm3" is likewise not in the IANA digest registry (RFC 9530 §5); both
ends of a trustspace exchange understand it, and a generic RFC 9530 recipient ignores it.

`verify_request` refuses with a `RequestSignatureError` whose `reason` is machine-readable; it
checks, in this order: parse → algorithm → key → signature → freshness → coverage → digest →
nonce. The nonce is remembered only after everything else passed, so a forged request cannot
burn the nonce of a legitimate one.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from heapq import heappop, heappush
from typing import Any, ClassVar, Literal, Protocol, get_args
from urllib.parse import quote

import http_sf
import httpx
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureAlgorithm,
    HTTPSignatureKeyResolver,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from trustspace.crypto import SM3, Signer, SM2PublicKey

__all__ = [
    "ALGORITHM",
    "BASE_COMPONENTS",
    "CREDENTIAL_HEADER",
    "LABEL",
    "REASONS",
    "MemoryNonceStore",
    "NonceStore",
    "NonceStoreFull",
    "Reason",
    "RequestSignatureError",
    "SM2RequestAuth",
    "SM2SM3",
    "SM3ContentDigest",
    "VerifiedRequest",
    "asgi_request_url",
    "new_nonce",
    "sign_request",
    "verify_request",
]

ALGORITHM = "sm2-sm3"
LABEL = "ts"
DIGEST_ALGORITHM = "sm3"
CREDENTIAL_HEADER = "trustspace-credential"
# Always covered: what the request does, where, and with which body.
BASE_COMPONENTS = ("@method", "@target-uri", "content-digest")
NONCE_BYTES = 16  # 128 bits, 22 base64url characters

Reason = Literal[
    "missing-signature",
    "malformed-signature",
    "unsupported-algorithm",
    "unknown-key",
    "bad-signature",
    "missing-digest",
    "digest-mismatch",
    "stale",
    "future",
    "replayed-nonce",
    "missing-component",
]
REASONS: frozenset[str] = frozenset(get_args(Reason))

# Header input: a mapping, or field lines in wire order (str pairs, or an ASGI server's raw
# bytes pairs, which are decoded as Latin-1 the way the library's own adapters do).
HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]]
KeyResolver = Callable[[str], SM2PublicKey | None]

_SIGNATURE_FIELDS = frozenset({"signature", "signature-input", "content-digest"})
_PARAMS = frozenset({"created", "keyid", "alg", "nonce"})
_KEY_ID = re.compile(r"[0-9a-f]{64}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,64}")  # ≥ 128 bits; fits the nonce stores' columns
_FIELD_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")  # RFC 9110 §5.1 token, lowercased


class RequestSignatureError(Exception):
    """A request's signature was refused. `reason` is one of `REASONS`; `detail` explains."""

    def __init__(self, reason: Reason, detail: str = "", key_id: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        self.reason: Reason = reason
        self.detail = detail
        self.key_id = key_id
        super().__init__(reason + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class VerifiedRequest:
    """What `verify_request` proved: who signed, when, with which nonce, covering what."""

    key_id: str
    created: datetime
    nonce: str
    components: tuple[str, ...]


# ---- replay protection -----------------------------------------------------------------------

class NonceStoreFull(Exception):
    """The nonce store cannot remember one more nonce. Not the caller's fault: answer 503."""


class NonceStore(Protocol):
    def remember(self, key_id: str, nonce: str, expires_at: datetime) -> bool:
        """Record (key_id, nonce) until `expires_at`; False if it was already seen and has not
        expired. A store that cannot record it raises `NonceStoreFull`: it must never forget
        an unexpired nonce to make room, since that would let a replay through."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


class MemoryNonceStore:
    """A bounded, thread-safe in-process `NonceStore` (one node process, or tests).

    An entry lives until its `expires_at` has passed on `clock`; expired entries are pruned on
    every call. When `max_entries` unexpired nonces are held, `remember` raises `NonceStoreFull`
    (refuse, rather than forget a nonce a replay could reuse). Only fully verified requests
    reach the store, so only authenticated peers can fill it.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], datetime] = utc_now
                 ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], datetime] = {}
        self._by_expiry: list[tuple[datetime, str, str]] = []

    def remember(self, key_id: str, nonce: str, expires_at: datetime) -> bool:
        with self._lock:
            now = self._clock()
            self._prune(now)
            if (key_id, nonce) in self._seen:
                return False
            if expires_at < now:
                return True  # already expired: a replay would be refused as stale anyway
            if len(self._seen) >= self._max:
                raise NonceStoreFull(f"{len(self._seen)} unexpired nonces held")
            self._seen[(key_id, nonce)] = expires_at
            heappush(self._by_expiry, (expires_at, key_id, nonce))
            return True

    def _prune(self, now: datetime) -> None:
        # An entry expiring exactly now is kept: a request created max_skew ago is still fresh.
        while self._by_expiry and self._by_expiry[0][0] < now:
            _, key_id, nonce = heappop(self._by_expiry)
            del self._seen[(key_id, nonce)]

    def __len__(self) -> int:
        """The number of unexpired nonces held."""
        with self._lock:
            self._prune(self._clock())
            return len(self._seen)


# ---- the pieces the library needs --------------------------------------------------------------

class SM2SM3(HTTPSignatureAlgorithm):
    """RFC 9421 algorithm "sm2-sm3": `private_key` is a `Signer`, `public_key` an SM2PublicKey."""

    algorithm_id = ALGORITHM

    def __init__(self, public_key: SM2PublicKey | None = None,
                 private_key: Signer | None = None) -> None:
        self.public_key = public_key
        self.private_key = private_key

    def sign(self, message: bytes) -> bytes:
        if self.private_key is None:
            raise HTTPMessageSignaturesException("sm2-sm3: no signer")
        return self.private_key.sign(message)

    def verify(self, signature: bytes, message: bytes) -> None:
        if self.public_key is None:
            raise HTTPMessageSignaturesException("sm2-sm3: no public key")
        self.public_key.verify(signature, message)  # raises SignatureInvalid


class SM3ContentDigest(ContentDigest):
    """RFC 9530 Content-Digest with SM3 only: a field without an sm3 member, or with any other
    algorithm in it, is refused rather than half-checked."""

    algorithm = DIGEST_ALGORITHM
    _hashers: ClassVar[dict[str, Callable[..., Any]]] = {DIGEST_ALGORITHM: SM3}


class _Signer(HTTPMessageSigner):
    content_digest_class = SM3ContentDigest


class _Verifier(HTTPMessageVerifier):
    content_digest_class = SM3ContentDigest

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        """Freshness is judged by `verify_request` against the caller's clock and skew; the
        library's own check reads the wall clock with a fixed 5 s skew."""


class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, key: SM2PublicKey) -> None:
        self._key = key

    def resolve_public_key(self, key_id: str) -> SM2PublicKey | None:
        return self._key if key_id == self._key.key_id else None


_SIGNER = _Signer(signature_algorithm=SM2SM3)


class _FieldLines:
    """Header field lines in wire order, with the small mapping interface the library reads
    (`items`) and writes (`[name] = value`, `del`) when it adds Content-Digest and Signature."""

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self._lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return list(self._lines)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._lines)

    def __setitem__(self, name: str, value: str) -> None:
        self._lines = [(n, v) for n, v in self._lines if n.lower() != name.lower()]
        self._lines.append((name, value))

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._lines = [(n, v) for n, v in self._lines if n.lower() != name.lower()]

    def combined(self, name: str) -> str | None:
        """All lines of one field joined as RFC 9110 §5.3 combines them, None if absent."""
        values = [v.strip(" \t") for n, v in self._lines if n.lower() == name]
        return ", ".join(values) if values else None


@dataclass
class _Message:
    """The request as the library's component resolver reads it."""

    method: str
    url: str
    headers: _FieldLines


def _field_lines(headers: HeaderInput) -> _FieldLines:
    items: Iterable[tuple[str | bytes, str | bytes]] = (
        headers.items() if isinstance(headers, Mapping) else headers)
    lines = []
    for name, value in items:
        lines.append((name.decode("latin-1") if isinstance(name, bytes) else name,
                      value.decode("latin-1") if isinstance(value, bytes) else value))
    return _FieldLines(lines)


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return utc_now()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now


# ---- signing ------------------------------------------------------------------------------------

def new_nonce() -> str:
    """A fresh random nonce: 128 bits, base64url without padding."""
    return secrets.token_urlsafe(NONCE_BYTES)


def sign_request(method: str, url: str, headers: HeaderInput, body: bytes, signer: Signer, *,
                 now: datetime | None = None, extra_components: Sequence[str] = ()
                 ) -> dict[str, str]:
    """The header fields that sign this request: Content-Digest, Signature-Input, Signature.

    They replace any such fields `headers` already has. Covered: "@method", "@target-uri",
    "content-digest", the Trustspace-Credential header when `headers` carry one, and each of
    `extra_components` (header names, which must be present). Raises ValueError for a request
    that cannot be signed (relative or malformed URL, lowercase method, absent header, ...).
    """
    created = _aware(now)
    fields = _field_lines(headers)
    for name in list(fields):
        if name.lower() in _SIGNATURE_FIELDS:
            del fields[name]
    covered = list(BASE_COMPONENTS)
    wanted = [*extra_components, *([CREDENTIAL_HEADER] if CREDENTIAL_HEADER in fields else [])]
    for name in wanted:
        component = name.lower()
        if not _FIELD_NAME.fullmatch(component) or component in _SIGNATURE_FIELDS:
            raise ValueError(f"cannot cover {name!r}: extra components are header names other "
                             "than the signature and digest fields")
        if component not in fields:
            raise ValueError(f"cannot cover {name!r}: the request has no such header")
        if component not in covered:
            covered.append(component)
    message = _Message(method, url, fields)
    try:
        prepared = _SIGNER.prepare(message, key_id=signer.key_id, created=created,
                                   nonce=new_nonce(), label=LABEL,
                                   covered_component_ids=covered, body=body)
        # prepare/apply is the library's path for an external signer: a Signer may be an HSM.
        _SIGNER.apply(message, prepared, signer.sign(prepared.signature_base))
    except HTTPMessageSignaturesException as exc:
        raise ValueError(f"cannot sign this request: {exc}") from None
    added = {}
    for name in ("Content-Digest", "Signature-Input", "Signature"):
        value = fields.combined(name.lower())
        if value is None:
            raise RuntimeError(f"http-message-signatures did not write {name}")
        added[name] = value
    return added


class SM2RequestAuth(httpx.Auth):
    """Signs every request an httpx Client or AsyncClient sends (see `sign_request`).

    Signatures cover the URL, so a redirect to another URL will not verify: keep httpx's
    default of not following redirects for node-to-node calls.
    """

    requires_request_body = True

    def __init__(self, signer: Signer, *, extra_components: Sequence[str] = (),
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._signer = signer
        self._extra = tuple(extra_components)
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        added = sign_request(request.method, str(request.url), request.headers.multi_items(),
                             request.content, self._signer, now=self._clock(),
                             extra_components=self._extra)
        for name, value in added.items():
            request.headers[name] = value
        yield request


# ---- verification -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Parsed:
    label: str
    components: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    params: dict[str, Any]


def _refuse(reason: Reason, detail: str, key_id: str | None = None) -> RequestSignatureError:
    return RequestSignatureError(reason, detail, key_id)


def _parse_dictionary(field: str, value: str) -> dict[str, Any]:
    def duplicate(key: str, context: str) -> None:
        raise _refuse("malformed-signature", f"{field}: duplicate {context} key {key!r}")

    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary",
                               on_duplicate_key=duplicate)
    except (ValueError, UnicodeEncodeError) as exc:
        raise _refuse("malformed-signature", f"{field} is not a structured dictionary: {exc}"
                      ) from None
    if not isinstance(parsed, dict):
        raise _refuse("malformed-signature", f"{field} is not a structured dictionary")
    return parsed


def _parse(fields: _FieldLines) -> _Parsed:
    """RFC 9421 §4.1-4.2: exactly one label in Signature-Input and Signature, an inner list of
    string component ids with parameters, a byte-sequence signature."""
    sig_input = fields.combined("signature-input")
    signature = fields.combined("signature")
    if sig_input is None and signature is None:
        raise _refuse("missing-signature", "no Signature-Input or Signature header")
    if sig_input is None or signature is None:
        raise _refuse("malformed-signature", "Signature-Input and Signature come together")
    inputs = _parse_dictionary("Signature-Input", sig_input)
    values = _parse_dictionary("Signature", signature)
    if len(inputs) != 1 or len(values) != 1:
        raise _refuse("malformed-signature",
                      f"exactly one signature expected, got labels {sorted(inputs | values)}")
    if inputs.keys() != values.keys():
        raise _refuse("malformed-signature", "Signature-Input and Signature labels differ")
    (label, (members, params)), = inputs.items()
    value, _ = values[label]
    if not isinstance(members, list):
        raise _refuse("malformed-signature", "Signature-Input member must be an inner list")
    if not isinstance(value, bytes) or not value:
        raise _refuse("malformed-signature", "Signature member must be a byte sequence")
    components = []
    for name, component_params in members:
        if type(name) is not str or name != name.lower() or name == "@signature-params":
            raise _refuse("malformed-signature", f"bad component id {name!r}")
        identity = (name, tuple(sorted(component_params.items())))
        if identity in components:
            raise _refuse("malformed-signature", f"component {name!r} covered twice")
        components.append(identity)
    return _Parsed(label, tuple(components), dict(params))


def _check_params(params: Mapping[str, Any]) -> tuple[str, int, str]:
    unknown = set(params) - _PARAMS
    if unknown:
        raise _refuse("malformed-signature", f"unexpected signature parameters {sorted(unknown)}")
    key_id, created, nonce = params.get("keyid"), params.get("created"), params.get("nonce")
    if type(key_id) is not str or not _KEY_ID.fullmatch(key_id):
        raise _refuse("malformed-signature", "keyid must be 64 lowercase hex digits (SM3 of SPKI)")
    if type(created) is not int:
        raise _refuse("malformed-signature", "created must be an integer", key_id)
    if type(nonce) is not str or not _NONCE.fullmatch(nonce):
        raise _refuse("malformed-signature", "nonce must be 22-64 base64url characters", key_id)
    return key_id, created, nonce


def verify_request(method: str, url: str, headers: HeaderInput, body: bytes,
                   resolve_key: KeyResolver, nonces: NonceStore, *,
                   now: datetime | None = None, max_skew: timedelta = timedelta(seconds=300),
                   required_components: Sequence[str] = ()) -> VerifiedRequest:
    """Check the SM2 signature and SM3 Content-Digest of a received request; remember its nonce.

    `url` is the absolute URL as the client addressed it (see `asgi_request_url`), `body` the
    bytes received (before content decoding). The signature must cover "@method",
    "@target-uri", "content-digest", the Trustspace-Credential header when present, and every
    one of `required_components`. Raises `RequestSignatureError` naming the first failure, or
    `NonceStoreFull` (the server's problem, not a refusal of the request).
    """
    now = _aware(now)
    if max_skew < timedelta(0):
        raise ValueError("max_skew must not be negative")
    fields = _field_lines(headers)
    parsed = _parse(fields)
    alg = parsed.params.get("alg")
    if type(alg) is not str:
        raise _refuse("malformed-signature", "alg parameter (a string) is required")
    if alg != ALGORITHM:
        raise _refuse("unsupported-algorithm", f"alg {alg!r}; this node accepts {ALGORITHM!r}")
    key_id, created_ts, nonce = _check_params(parsed.params)

    key = resolve_key(key_id)
    if key is None or key.key_id != key_id:
        raise _refuse("unknown-key", "no trusted key with this id", key_id)

    plain = {name for name, params in parsed.components if not params}
    if "content-digest" in plain and "content-digest" not in fields:
        # The signature base cannot even be rebuilt without the field it covers.
        raise _refuse("missing-digest", "Content-Digest is covered but absent", key_id)
    message = _Message(method, url, fields)
    try:
        results = _Verifier(signature_algorithm=SM2SM3, key_resolver=_OneKey(key)).verify(
            message, max_age=None)
    except HTTPMessageSignaturesException as exc:
        raise _refuse("bad-signature", str(exc), key_id) from None
    (result,) = results

    try:
        created = datetime.fromtimestamp(created_ts, UTC)
    except (OverflowError, OSError, ValueError):
        raise _refuse("stale" if created_ts < 0 else "future",
                      f"created {created_ts} is not a usable time", key_id) from None
    if created < now - max_skew:
        raise _refuse("stale", f"created {created.isoformat()}, now {now.isoformat()}", key_id)
    if created > now + max_skew:
        raise _refuse("future", f"created {created.isoformat()}, now {now.isoformat()}", key_id)

    required = [*BASE_COMPONENTS, *(c.lower() for c in required_components)]
    if CREDENTIAL_HEADER in fields:
        required.append(CREDENTIAL_HEADER)  # a credential nobody signed could be anyone's
    for component in required:
        if component not in plain:
            reason: Reason = "missing-digest" if component == "content-digest" \
                else "missing-component"
            raise _refuse(reason, f"the signature does not cover {component!r}", key_id)

    try:
        SM3ContentDigest.verify(result.covered_components['"content-digest"'], body)
    except HTTPMessageSignaturesException as exc:
        raise _refuse("digest-mismatch", str(exc), key_id) from None

    if not nonces.remember(key_id, nonce, created + max_skew):
        raise _refuse("replayed-nonce", f"nonce {nonce} already used by this key", key_id)
    return VerifiedRequest(
        key_id=key_id,
        created=created,
        nonce=nonce,
        components=tuple(name if not params else http_sf.ser((name, dict(params)))
                         for name, params in parsed.components),
    )


def asgi_request_url(scope: Mapping[str, Any]) -> str:
    """The absolute URL an ASGI request was addressed to, path bytes exactly as received.

    Starlette's `str(request.url)` rebuilds the path from `scope["path"]`, which the server has
    percent-decoded ("/a%20b" becomes "/a b"), so a signature over "@target-uri" would not
    verify for such paths. `raw_path` keeps the bytes the client sent; a server that does not
    provide it gets the decoded path percent-encoded again, which is right for most paths.
    """
    scheme = scope.get("scheme", "http")
    host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), None)
    if host is None:
        server = scope.get("server")
        if server is None:
            raise ValueError("the request has neither a Host header nor a server address")
        name, port = server
        if ":" in name and not name.startswith("["):
            name = f"[{name}]"
        host = name if port == {"http": 80, "https": 443}.get(scheme) else f"{name}:{port}"
    raw_path = scope.get("raw_path")
    path = (raw_path.decode("latin-1") if raw_path
            else quote(scope["path"], safe="/!$&'()*+,;=:@~"))
    query = scope.get("query_string", b"")
    return f"{scheme}://{host}{path}" + (f"?{query.decode('latin-1')}" if query else "")
