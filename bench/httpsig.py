"""What signing and verifying one node-to-node request costs beyond SM2 (connector.httpsig).

Run from the repository root::

    .venv/bin/python bench/httpsig.py              # 2000 requests, about 10 seconds
    .venv/bin/python bench/httpsig.py --runs 200   # smoke test

For a POST as nodes send them (httpx's headers, a membership credential header, a JSON body),
prints the median and 90th percentile, in µs of this thread's CPU time, of one call of:

- ours: `sign_request`, and `verify_request` with an in-memory nonce store;
- library: the same request signed and verified through http-message-signatures, as httpsig
  did before it built the signature base itself (kept below for comparison: `library_sign`,
  `library_verify`);
- bare SM2: `Signer.sign` and `SM2PublicKey.verify` of a signature base of the same length,
  with the same key: the floor both paths stand on.

The calls are interleaved in a new random order each round, so all rows see the same load on a
shared machine and run on cold caches equally often; each verifier checks the request the
other signed, so the figures are for requests that verify. (Calls repeated in a tight loop of
their own, on warm caches, cost less: ours then takes about 25 µs (sign) and 55 µs (verify)
beyond SM2.)
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import http_sf
from _common import cpu_model, percentile, progress
from http_message_signatures import HTTPSignatureKeyResolver

from trustspace.connector.httpsig import (
    CREDENTIAL_HEADER,
    LABEL,
    MemoryNonceStore,
    new_nonce,
    sign_request,
    verify_request,
)
from trustspace.crypto import SM2PrivateKey, SM2PublicKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The library adapters the tests cross-check with: the old path, measured the same way.
from tests.test_httpsig import (  # noqa: E402
    LibrarySigner,
    LibrarySM2,
    LibrarySM3Digest,
    LibraryVerifier,
)

URL = "https://node-b.example:8443/dsp/catalog/request?limit=50&offset=100"
BODY = b'{"@context":"https://w3id.org/dspace/2024/1/context.json",' \
       b'"@type":"dspace:CatalogRequestMessage","dspace:filter":[{"keyword":"traffic"}]}'
CREDENTIAL = "eyJ" + "A" * 1021  # a membership credential header is about 1 KiB of base64url
HEADERS = (
    ("Host", "node-b.example:8443"), ("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate"),
    ("Connection", "keep-alive"), ("User-Agent", "python-httpx/0.28.1"),
    ("Content-Length", str(len(BODY))), ("Content-Type", "application/json"),
    ("Trustspace-Credential", CREDENTIAL),
)
COVERED = ("@method", "@target-uri", "content-digest", CREDENTIAL_HEADER)
SKEW = timedelta(seconds=300)


# ---- the library path, as httpsig used it ------------------------------------------------------

class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, key: SM2PublicKey) -> None:
        self._key = key

    def resolve_public_key(self, key_id: str) -> SM2PublicKey | None:
        return self._key if key_id == self._key.key_id else None


@dataclass
class _Message:
    method: str
    url: str
    headers: dict[str, str]


_LIBRARY_SIGNER = LibrarySigner(signature_algorithm=LibrarySM2)


def library_sign(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes,
                 signer: SM2PrivateKey, now: datetime) -> dict[str, str]:
    """The old `sign_request`: prepare (builds the base), sign, apply (builds it again)."""
    message = _Message(method, url, dict(headers))
    prepared = _LIBRARY_SIGNER.prepare(message, key_id=signer.key_id, created=now,
                                       nonce=new_nonce(), label=LABEL,
                                       covered_component_ids=COVERED, body=body)
    _LIBRARY_SIGNER.apply(message, prepared, signer.sign(prepared.signature_base))
    return {name: message.headers[name]
            for name in ("Content-Digest", "Signature-Input", "Signature")}


def library_verify(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes,
                   key: SM2PublicKey, nonces: MemoryNonceStore, now: datetime) -> None:
    """The old `verify_request`'s costly steps: its own http_sf parse of both fields, the
    library's verify (parse again, rebuild the base, SM2), the library's digest check."""
    fields = dict(headers)
    for name in ("signature-input", "signature"):
        http_sf.parse(fields[name].encode("latin-1"), tltype="dictionary")
    verifier = LibraryVerifier(signature_algorithm=LibrarySM2, key_resolver=_OneKey(key))
    (result,) = verifier.verify(_Message(method, url, fields), max_age=None)
    LibrarySM3Digest.verify(result.covered_components['"content-digest"'], body)
    created = datetime.fromtimestamp(int(result.parameters["created"]), UTC)
    if not nonces.remember(key.key_id, str(result.nonce), created + SKEW):
        raise RuntimeError("replayed nonce")


# ---- measurement -------------------------------------------------------------------------------

def shuffled(names: Sequence[str]) -> list[str]:
    """A new order each round: the first call after another path's runs on cold caches."""
    order = list(names)
    random.shuffle(order)
    return order


def timed(samples: list[float], call: Callable[[], Any]) -> Any:
    start = time.thread_time_ns()
    result = call()
    samples.append((time.thread_time_ns() - start) / 1000)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=2000, help="requests per figure")
    runs = parser.parse_args(argv).runs

    key = SM2PrivateKey.generate()
    public = key.public_key
    resolve = {key.key_id: public}.get
    now = datetime.now(UTC)
    ours_store, library_store = MemoryNonceStore(), MemoryNonceStore()
    base = _LIBRARY_SIGNER.prepare(
        _Message("POST", URL, dict(HEADERS)), key_id=key.key_id, created=now, nonce=new_nonce(),
        label=LABEL, covered_component_ids=COVERED, body=BODY).signature_base
    bare_signature = key.sign(base)
    names = ("ours", "library", "bare SM2")
    sign: dict[str, list[float]] = {name: [] for name in names}
    verify: dict[str, list[float]] = {name: [] for name in names}

    def received(added: dict[str, str]) -> list[tuple[str, str]]:
        # As an ASGI server hands them over: lowercase names, wire order.
        return [(name.lower(), value) for name, value in (*HEADERS, *added.items())]

    progress(f"{runs} requests, signature base {len(base)} bytes")
    gc.disable()
    try:
        for _ in range(runs):
            signs: dict[str, Callable[[], Any]] = {
                "ours": partial(sign_request, "POST", URL, HEADERS, BODY, key, now=now),
                "library": partial(library_sign, "POST", URL, HEADERS, BODY, key, now),
                "bare SM2": partial(key.sign, base),
            }
            added = {name: timed(sign[name], signs[name]) for name in shuffled(names)}
            # Each path verifies what the other signed: a check that they agree, too.
            verifies: dict[str, Callable[[], Any]] = {
                "ours": partial(verify_request, "POST", URL, received(added["library"]), BODY,
                                resolve, ours_store, now=now, max_skew=SKEW),
                "library": partial(library_verify, "POST", URL, received(added["ours"]), BODY,
                                   public, library_store, now),
                "bare SM2": partial(public.verify, bare_signature, base),
            }
            for name in shuffled(names):
                timed(verify[name], verifies[name])
    finally:
        gc.enable()

    print(f"connector.httpsig, {runs} requests ({len(BODY)}-byte body, {len(base)}-byte "
          f"signature base); µs of thread CPU time; {cpu_model()}")
    print(f"{'':18}{'sign p50':>10}{'p90':>8}{'verify p50':>12}{'p90':>8}")
    medians: dict[str, tuple[float, float]] = {}
    for name in names:
        s, v = sorted(sign[name]), sorted(verify[name])
        medians[name] = (statistics.median(s), statistics.median(v))
        print(f"{name:18}{medians[name][0]:10.1f}{percentile(s, 0.9):8.1f}"
              f"{medians[name][1]:12.1f}{percentile(v, 0.9):8.1f}")
    bare_sign, bare_verify = medians["bare SM2"]
    for name in ("ours", "library"):
        print(f"{name + ' beyond SM2':18}{medians[name][0] - bare_sign:10.1f}{'':8}"
              f"{medians[name][1] - bare_verify:12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
