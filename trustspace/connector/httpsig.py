"""Signed node-to-node requests: RFC 9421 HTTP Message Signatures with SM2, and an RFC 9530
Content-Digest computed with SM3.

Every request one node sends another carries three header fields (one signature, label "ts")::

    Content-Digest: sm3=:<base64 SM3 of the body, also for an empty body>:
    Signature-Input: ts=("@method" "@target-uri" "content-digest" "trustspace-credential")\
;created=1767225600;keyid="<64 hex: SM3 of the sender's SPKI>";alg="sm2-sm3";nonce="<22 base64url>"
    Signature: ts=:<base64 DER SM2 signature (r, s)>:

The signature base (RFC 9421 §2.5) is built here, for only what trustspace signs: the derived
components "@method" and "@target-uri" and header fields without parameters. A general RFC 9421
library spent as much time again as the SM2 operation on every request; the tests check this
code against one (http-message-signatures) in both directions. "sm2-sm3" is an
application-specific algorithm (RFC 9421 §6.2): SM2 over SM3(Z ‖ base) with the GM/T 0009
default user ID, the signature DER-encoded as GM/T 0009-2012 §7.2 and trustspace's signed
documents do, so `openssl dgst -sm3 -verify pub.pem -sigopt distid:1234567812345678` checks it
against the base bytes. "sm3" is likewise not in the IANA digest registry (RFC 9530 §5); both
ends of a trustspace exchange understand it, and a generic RFC 9530 recipient ignores it.

`verify_request` refuses with a `RequestSignatureError` whose `reason` is machine-readable; it
checks, in this order: parse → algorithm → key → signature → freshness → coverage → digest →
nonce. Parsing is strict RFC 8941 for the shapes RFC 9421 uses; signature parameters and
covered components this node does not support (component parameters such as ;sf, ;key, ;req,
derived components other than the two above) are malformed-signature, judged once the algorithm
is known to be ours. The nonce is remembered only after everything else passed, so a forged
request cannot burn the nonce of a legitimate one.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from heapq import heappop, heappush
from ipaddress import IPv6Address
from typing import Any, Literal, NamedTuple, Protocol, get_args
from urllib.parse import quote

import httpx

from trustspace.crypto import SignatureInvalid, Signer, SM2PublicKey, sm3

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
# bytes pairs, which are decoded as Latin-1: RFC 9110 §5.5 field values are octets).
HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]]
KeyResolver = Callable[[str], SM2PublicKey | None]

_SIGNATURE_FIELDS = frozenset({"signature", "signature-input", "content-digest"})
_DERIVED = frozenset({"@method", "@target-uri"})  # the derived components trustspace signs
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


# ---- replay protection --------------------------------------------------------------------------

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


# ---- header fields ------------------------------------------------------------------------------

_Bare = int | str | bool  # an RFC 8941 bare item, as far as RFC 9421 uses them
_Fields = dict[str, list[str]]  # lowercase name -> field line values, in wire order
_OBS_FOLD = re.compile(r"[ \t]*\r\n[ \t]+")


def _fields(headers: HeaderInput) -> _Fields:
    items: Iterable[tuple[str | bytes, str | bytes]] = (
        headers.items() if isinstance(headers, Mapping) else headers)
    fields: _Fields = {}
    for name, value in items:
        key = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        fields.setdefault(key, []).append(text)
    return fields


def _field_value(lines: list[str]) -> str:
    """RFC 9421 §2.1: each line unfolded (obs-fold becomes SP, RFC 9112 §5.2) and trimmed of
    SP and HTAB, the lines of a repeated field joined by ", " (RFC 9110 §5.3)."""
    return ", ".join((_OBS_FOLD.sub(" ", v) if "\r\n" in v else v).strip(" \t") for v in lines)


def _content_digest(body: bytes) -> str:
    """RFC 9530 §2: Content-Digest as an RFC 8941 dictionary with one sm3 byte sequence."""
    return f"{DIGEST_ALGORITHM}=:{base64.b64encode(sm3(body)).decode()}:"


# ---- the signature base (RFC 9421 §2.5) ---------------------------------------------------------

# RFC 3986 §3 (with §2.1-2.3): an encoded absolute URL with a non-empty host. "-" comes first
# so that it stays literal in the character classes below.
_CHAR = r"-A-Za-z0-9._~!$&'()*+,;="  # unreserved and sub-delims
_PCT = r"%[0-9A-Fa-f]{2}"


def _run(chars: str) -> str:
    """Any number of `chars` and percent-escapes, as a class-run loop: several times faster in
    Python's regex engine than one alternation per character."""
    return rf"[{chars}]*(?:{_PCT}[{chars}]*)*"


_URL = re.compile(
    rf"(?P<scheme>[A-Za-z][-A-Za-z0-9+.]*)://"
    rf"(?P<userinfo>{_run(_CHAR + ':')}@)?"
    rf"(?P<host>\[(?:[0-9A-Fa-f:.]+(?:%25(?:[-A-Za-z0-9._~]|{_PCT})+)?"  # RFC 6874 zone ID
    rf"|[vV][0-9A-Fa-f]+\.[{_CHAR}:]+)\]|(?:[{_CHAR}]|{_PCT}){_run(_CHAR)})"
    rf"(?P<port>:[0-9]*)?"
    rf"(?P<path>(?:/{_run(_CHAR + ':@/')})?)"
    rf"(?P<query>\?{_run(_CHAR + ':@/?')})?"
    rf"(?P<fragment>\#{_run(_CHAR + ':@/?')})?")


def _target_uri(method: str, url: str) -> str:
    """RFC 9421 §2.2.2: the URL as given, less userinfo and fragment, which are not part of the
    request target; an empty path is "/" except in OPTIONS (RFC 9110 §4.2.3). Nothing else is
    normalized: the sender and the receiver must agree on the exact URL."""
    match = _URL.fullmatch(url)
    if match is None:
        raise ValueError("the URL is not an encoded absolute URL with a host")
    host = match["host"]
    if host.startswith("[") and host[1] not in "vV":
        try:
            IPv6Address(host[1:-1].partition("%25")[0])
        except ValueError:
            raise ValueError("the URL's host is not an IPv6 address") from None
    path = match["path"]
    if match["userinfo"] is None and match["fragment"] is None and path:
        return url  # the usual case
    path = path or ("" if method == "OPTIONS" else "/")
    return f"{match['scheme']}://{host}{match['port'] or ''}{path}{match['query'] or ''}"


def _signature_params(components: Sequence[str], params: Mapping[str, _Bare]) -> str:
    """RFC 9421 §2.3: the "@signature-params" value, the inner list serialized as RFC 8941
    §4.1.1.1 does, so a receiver rebuilds it from what it parsed whatever the spacing. Callers
    pass only checked values (field-name tokens, an integer, hex, base64url, "sm2-sm3"): none
    needs the escaping of RFC 8941 §4.1.6, and none is a Boolean."""
    return ("(" + " ".join(f'"{name}"' for name in components) + ")"
            + "".join(f";{key}={value}" if type(value) is int else f';{key}="{value}"'
                      for key, value in params.items()))


def _signature_base(method: str, url: str, fields: _Fields, components: Sequence[str],
                    signature_params: str) -> bytes:
    """RFC 9421 §2.5 for derived components in `_DERIVED` and plain header fields. Raises
    ValueError for what the base cannot hold: an absent field, a non-ASCII or control
    character (a field value may hold HTAB), a lowercase method (§2.2.1)."""
    lines = []
    for name in components:
        if name == "@method":
            if method != method.upper():
                raise ValueError("the method must be uppercase")
            value = method
        elif name == "@target-uri":
            value = _target_uri(method, url)
        else:
            if name not in fields:
                raise ValueError(f"the request has no {name!r} field")
            value = _field_value(fields[name])
            if not (value.isascii() and value.replace("\t", " ").isprintable()):
                raise ValueError(f"the {name!r} field holds a character a signature base cannot")
            lines.append(f'"{name}": {value}')
            continue
        # Derived values (§2.2): printable, without surrounding spaces.
        if not (value.isascii() and value.isprintable() and value == value.strip(" ")):
            raise ValueError(f"{name} {value!r} cannot be in a signature base")
        lines.append(f'"{name}": {value}')
    lines.append(f'"@signature-params": {signature_params}')
    return "\n".join(lines).encode("ascii")


# ---- signing ------------------------------------------------------------------------------------

def new_nonce() -> str:
    """A fresh random nonce: 128 bits, base64url without padding."""
    return secrets.token_urlsafe(NONCE_BYTES)


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return utc_now()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now


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
    fields = {name: lines for name, lines in _fields(headers).items()
              if name not in _SIGNATURE_FIELDS}
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
    if not _KEY_ID.fullmatch(signer.key_id):
        raise ValueError("cannot sign: the signer's key_id is not 64 lowercase hex digits")
    digest = _content_digest(body)
    fields["content-digest"] = [digest]
    params = _signature_params(covered, {"created": int(created.timestamp()),
                                         "keyid": signer.key_id, "alg": ALGORITHM,
                                         "nonce": new_nonce()})
    try:
        base = _signature_base(method, url, fields, covered, params)
    except ValueError as exc:
        raise ValueError(f"cannot sign this request: {exc}") from None
    signature = base64.b64encode(signer.sign(base)).decode()  # a Signer may be an HSM
    return {"Content-Digest": digest, "Signature-Input": f"{LABEL}={params}",
            "Signature": f"{LABEL}=:{signature}:"}


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


# ---- parsing Signature-Input and Signature (RFC 8941, for the shapes RFC 9421 uses) -------------

_KEY = r"[a-z*][-a-z0-9_.*]*"  # §3.1.2
_STRING = r'"[\x20\x21\x23-\x5b\x5d-\x7e]*(?:\\["\\][\x20\x21\x23-\x5b\x5d-\x7e]*)*"'  # §3.3.3
# Parameter values: the Integers, Strings and Booleans RFC 9421 §2.1 and §2.3 define. Tokens,
# Decimals and Byte Sequences are valid RFC 8941 but no RFC 9421 parameter has them: refused.
_BARE = rf"-?[0-9]{{1,15}}|{_STRING}|\?[01]"
_PARAMETERS = rf"(?:;\x20*{_KEY}(?:=(?:{_BARE}))?)*"
_PARAMETER = re.compile(rf";\x20*({_KEY})(?:=({_BARE}))?")
_DICT_KEY = re.compile(_KEY)
_MEMBER_SEPARATOR = re.compile(r"[ \t]*,[ \t]*")  # §4.2.2: OWS "," OWS
# Signature-Input member: an Inner List of Strings (§3.1.1), group 1 the items, 2 its parameters.
_INNER_LIST = re.compile(
    rf"\(\x20*((?:{_STRING}{_PARAMETERS}(?:\x20+{_STRING}{_PARAMETERS})*)?)\x20*\)"
    rf"({_PARAMETERS})")
_ITEM = re.compile(rf"({_STRING})({_PARAMETERS})")
# Signature member: a Byte Sequence (§3.3.5) without parameters; padding may be left out (§4.2.7).
_BYTES = re.compile(r":([A-Za-z0-9+/]*)={0,2}:")
_ESCAPE = re.compile(r'\\(["\\])')


class _Parsed(NamedTuple):
    label: str
    components: tuple[tuple[str, dict[str, _Bare]], ...]
    params: dict[str, _Bare]
    signature: bytes


def _refuse(reason: Reason, detail: str, key_id: str | None = None) -> RequestSignatureError:
    return RequestSignatureError(reason, detail, key_id)


def _unquote(string: str) -> str:
    inner = string[1:-1]
    return _ESCAPE.sub(r"\1", inner) if "\\" in inner else inner


def _bare(value: str) -> _Bare:
    if not value:
        return True  # a parameter without a value (§3.1.2)
    if value[0] == '"':
        return _unquote(value)
    if value[0] == "?":
        return value == "?1"
    return int(value)


def _parameters(field: str, text: str) -> dict[str, _Bare]:
    pairs = _PARAMETER.findall(text)
    params = {key: _bare(value) for key, value in pairs}
    if len(params) != len(pairs):  # RFC 8941 would keep the last; a signer never sends two
        raise _refuse("malformed-signature", f"{field}: a parameter is given twice")
    return params


def _dictionary(field: str, value: str, member: re.Pattern[str], shape: str
                ) -> dict[str, re.Match[str]]:
    """RFC 8941 §4.2.2 for a Dictionary whose members all match `member`; anything else is
    malformed, and so is a key given twice (which RFC 8941 would let overwrite)."""
    members: dict[str, re.Match[str]] = {}
    pos = 0
    while True:
        key = _DICT_KEY.match(value, pos)
        if key is None:
            raise _refuse("malformed-signature", f"{field}: expected a key at offset {pos}")
        if key[0] in members:
            raise _refuse("malformed-signature", f"{field}: duplicate dictionary key {key[0]!r}")
        found = member.match(value, key.end() + 1) if value.startswith("=", key.end()) else None
        if found is None:
            raise _refuse("malformed-signature", f"{field}: member {key[0]!r} must be {shape}")
        members[key[0]] = found
        pos = found.end()
        if pos == len(value):
            return members
        separator = _MEMBER_SEPARATOR.match(value, pos)
        if separator is None or separator.end() == len(value):
            raise _refuse("malformed-signature", f"{field}: unexpected text at offset {pos}")
        pos = separator.end()


def _parse(fields: _Fields) -> _Parsed:
    """RFC 9421 §4.1-4.2: exactly one label in Signature-Input and Signature, an inner list of
    string component ids with parameters, a byte-sequence signature."""
    if "signature-input" not in fields and "signature" not in fields:
        raise _refuse("missing-signature", "no Signature-Input or Signature header")
    if "signature-input" not in fields or "signature" not in fields:
        raise _refuse("malformed-signature", "Signature-Input and Signature come together")
    # Combined as RFC 9110 §5.3 does; not unfolded: an obs-fold here is malformed.
    inputs = _dictionary("Signature-Input",
                         ", ".join(v.strip(" \t") for v in fields["signature-input"]),
                         _INNER_LIST, "an inner list of strings")
    values = _dictionary("Signature", ", ".join(v.strip(" \t") for v in fields["signature"]),
                         _BYTES, "a byte sequence without parameters")
    if len(inputs) != 1 or len(values) != 1:
        raise _refuse("malformed-signature",
                      f"exactly one signature expected, got labels {sorted(inputs | values)}")
    if inputs.keys() != values.keys():
        raise _refuse("malformed-signature", "Signature-Input and Signature labels differ")
    (label, inner_list), = inputs.items()
    data = values[label][1]
    try:
        signature = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except ValueError:  # binascii.Error: a length no base64 has
        signature = b""
    if not signature:
        raise _refuse("malformed-signature", "Signature member must be a non-empty byte sequence")
    components: list[tuple[str, dict[str, _Bare]]] = []
    for quoted, parameters in _ITEM.findall(inner_list[1]):
        name = _unquote(quoted)
        params = _parameters("Signature-Input", parameters) if parameters else {}
        if name != name.lower() or name == "@signature-params":
            raise _refuse("malformed-signature", f"bad component id {name!r}")
        if (name, params) in components:  # dict equality: parameter order does not matter
            raise _refuse("malformed-signature", f"component {name!r} covered twice")
        components.append((name, params))
    return _Parsed(label, tuple(components), _parameters("Signature-Input", inner_list[2]),
                   signature)


# ---- verification -------------------------------------------------------------------------------

def _check_params(params: Mapping[str, _Bare]) -> tuple[str, int, str]:
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


def _check_components(components: Iterable[tuple[str, dict[str, _Bare]]], key_id: str
                      ) -> tuple[str, ...]:
    """Refuse what this node does not sign: a parameter changes what a component means (;sf,
    ;key, ;bs, ;req, ;tr, ;name), so ignoring one would check something the signer did not."""
    names = []
    for name, params in components:
        if params:
            raise _refuse("malformed-signature", f"component {name!r} has parameters "
                          f"{sorted(params)}; this node signs plain fields only", key_id)
        if name not in _DERIVED and not _FIELD_NAME.fullmatch(name):
            raise _refuse("malformed-signature", f"component {name!r} is not supported", key_id)
        names.append(name)
    return tuple(names)


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
    fields = _fields(headers)
    parsed = _parse(fields)
    alg = parsed.params.get("alg")
    if type(alg) is not str:
        raise _refuse("malformed-signature", "alg parameter (a string) is required")
    if alg != ALGORITHM:
        raise _refuse("unsupported-algorithm", f"alg {alg!r}; this node accepts {ALGORITHM!r}")
    key_id, created_ts, nonce = _check_params(parsed.params)
    components = _check_components(parsed.components, key_id)

    key = resolve_key(key_id)
    if key is None or key.key_id != key_id:
        raise _refuse("unknown-key", "no trusted key with this id", key_id)

    if "content-digest" in components and "content-digest" not in fields:
        # The signature base cannot even be rebuilt without the field it covers.
        raise _refuse("missing-digest", "Content-Digest is covered but absent", key_id)
    try:
        base = _signature_base(method, url, fields, components,
                               _signature_params(components, parsed.params))
        key.verify(parsed.signature, base)
    except (ValueError, SignatureInvalid) as exc:
        raise _refuse("bad-signature", str(exc), key_id) from None

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
        if component not in components:
            reason: Reason = "missing-digest" if component == "content-digest" \
                else "missing-component"
            raise _refuse(reason, f"the signature does not cover {component!r}", key_id)

    # RFC 9530 §2: only the serialization an RFC 8941 serializer produces for one SM3 digest
    # is accepted; another algorithm, a second member or parameters are not checked, so refused.
    if _field_value(fields["content-digest"]) != _content_digest(body):
        raise _refuse("digest-mismatch", "Content-Digest is not sm3=:<SM3 of the body>:", key_id)

    if not nonces.remember(key_id, nonce, created + max_skew):
        raise _refuse("replayed-nonce", f"nonce {nonce} already used by this key", key_id)
    return VerifiedRequest(key_id=key_id, created=created, nonce=nonce, components=components)


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
