"""`trustspace demo`: for now, a crypto self-check and a small story that prints what it proved.

Later issues grow it into the whole data-exchange demo; each step stays a function that returns
one line of evidence or raises. The summary table gives each step's seconds; TRUSTSPACE_DEMO_SKIP
(step names as the table shows them, comma-separated) leaves steps out, each reported skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path

from trustspace.connector.localspace import LocalDataSpace, local_dataspace
from trustspace.crypto import (
    CiphertextForm,
    DocumentInvalid,
    NotARecipient,
    SM2PrivateKey,
    open_sealed,
    seal,
    sign_document,
    sm3,
    sm4,
    verify_document,
)
from trustspace.crypto.sm2 import rs_to_signature

# GB/T 32918.5-2017 example on the recommended curve.
_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
_CT = bytes.fromhex(
    "04" "04ebfc718e8d1798620432268e77feb6415e2ede0e073c0f4f640ecd2e149a73"
    "e858f9d81e5430a57b36daab8f950a3c64e6ee6a63094d99283aff767e124df0"
    "59983c18f809e262923c53aec295d30383b54e39d609d160afcb1908d0bd8766"
    "21886ca989ca9c7d58087307ca93092d651efa"
)


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def step_sm3() -> str:
    _check(sm3(b"abc").hex().startswith("66c7f0f462eeedd9"), "SM3('abc')")
    _check(sm3(b"abcd" * 16).hex().startswith("debe9ff92275b8a1"), "SM3('abcd'*16)")
    return "SM3 matches both GB/T 32905-2016 examples"


def step_sm4() -> str:
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    _check(sm4.ecb_encrypt_block(key, key).hex() == "681edf34d206965e86b3e94f536e4246",
           "SM4 example 1")
    sealed = sm4.seal(sm4.new_key(), b"x")
    _check(len(sealed) == 12 + 1 + 16, "SM4-GCM layout")
    return "SM4 matches the GB/T 32907-2016 example; SM4-GCM seals with a 16-byte tag"


def step_sm2_vectors() -> str:
    key = SM2PrivateKey.from_private_value(_D)
    key.public_key.verify(rs_to_signature(_R, _S), b"message digest")
    _check(key.decrypt(_CT, CiphertextForm.C1C3C2) == b"encryption standard", "SM2 decrypt")
    return "SM2 verifies the GB/T 32918.5 signature example and decrypts its ciphertext example"


def step_openssl() -> str:
    openssl = shutil.which("openssl")
    if openssl is None:
        return "openssl CLI not installed: interoperability check not run"
    key = SM2PrivateKey.generate()
    message = b"interoperability"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "pub.pem").write_bytes(key.public_key.to_pem())
        (d / "msg").write_bytes(message)
        (d / "sig").write_bytes(key.sign(message))
        result = subprocess.run(  # noqa: S603 - fixed argv, our own temp files
            [openssl, "dgst", "-sm3", "-verify", d / "pub.pem", "-sigopt",
             "distid:1234567812345678", "-signature", d / "sig", d / "msg"],
            capture_output=True, check=False,
        )
    _check(result.returncode == 0, "openssl verify: " + result.stdout.decode()
           + result.stderr.decode())
    return "the openssl CLI verifies our SM2 signature with distid 1234567812345678"


def step_agreement() -> str:
    provider, consumer, regulator, outsider = (SM2PrivateKey.generate() for _ in range(4))
    body = {"product": "urn:ts:product:stats", "purpose": "research", "uses": 3}
    doc = sign_document("trustspace.demo.agreement", body, provider, role="provider")
    doc = doc.countersign(consumer, role="consumer")
    trusted = [provider.public_key, consumer.public_key]
    verify_document(doc.to_bytes(), trusted,
                    required_signers=[provider.key_id, consumer.key_id])
    tampered = doc.to_json()
    tampered["body"] = {**body, "uses": 300}
    try:
        verify_document(tampered, trusted)
        raise AssertionError("a tampered agreement verified")
    except DocumentInvalid as exc:
        _check(exc.reason == "digest-mismatch", f"unexpected refusal {exc.reason}")
    envelope = seal(b'{"policy": "k >= 10"}', [p.public_key for p in
                                              (provider, consumer, regulator)])
    for party in (provider, consumer, regulator):
        _check(open_sealed(envelope, party) == b'{"policy": "k >= 10"}', "envelope open")
    try:
        open_sealed(envelope, outsider)
        raise AssertionError("an outsider opened the envelope")
    except NotARecipient:
        pass
    return (f"agreement {doc.digest[4:16]}… signed by 2 parties; a tampered copy refused "
            "(digest-mismatch); its envelope opened by provider, consumer and regulator only")


def step_speed() -> str:
    key = SM2PrivateKey.generate()
    n, start = 200, time.perf_counter()
    for _ in range(n):
        sig = key.sign(b"m")
    signs = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(n):
        key.public_key.verify(sig, b"m")
    verifies = n / (time.perf_counter() - start)
    return f"SM2 here: {signs:,.0f} signatures/s, {verifies:,.0f} verifications/s (one core)"


CRYPTO_STEPS: list[tuple[str, Callable[[], str]]] = [
    ("SM3 vectors", step_sm3),
    ("SM4 vectors", step_sm4),
    ("SM2 vectors", step_sm2_vectors),
    ("OpenSSL interop", step_openssl),
    ("signed agreement & envelope", step_agreement),
    ("speed", step_speed),
]


STEPS = CRYPTO_STEPS  # kept for callers that list the crypto checks


SKIP_ENV = "TRUSTSPACE_DEMO_SKIP"  # step names to leave out, comma-separated

Row = tuple[str, str, float]  # a step, its result (pass, FAIL, skipped; "" for set-up), seconds


def _run_steps(steps: list[tuple[str, Callable[[], str]]], table: list[Row],
               skip: Collection[str] = ()) -> None:
    for name, step in steps:
        if name in skip:  # said on its line and in the summary: a skip never passes silently
            table.append((name, "skipped", 0.0))
            print(f"  – {name}: skipped ({SKIP_ENV})", flush=True)
            continue
        started = time.perf_counter()
        print(f"  … {name}", end="\r", flush=True)
        try:
            line = step()
            ok = True
        except Exception as exc:  # a demo reports every failure and carries on
            line, ok = f"{type(exc).__name__}: {exc}", False
        seconds = time.perf_counter() - started
        table.append((name, "pass" if ok else "FAIL", seconds))
        print(f"  {'✓' if ok else '✗'} {name}: {line}", flush=True)


def _summary(table: list[Row], seconds: float) -> None:
    width = max(len(name) for name, _, _ in table)
    print("\n  " + "step".ljust(width) + "  result   seconds")
    for name, result, took in table:
        print(f"  {name.ljust(width)}  {result or '-':7}  {took:7.1f}")
    print(f"  {'total'.ljust(width)}  {'':7}  {seconds:7.1f}")


def _skip_from_env() -> frozenset[str]:
    return frozenset(n.strip() for n in os.environ.get(SKIP_ENV, "").split(",") if n.strip())


def run(with_dataspace: bool = True, keep: bool = False, rpc_url: str | None = None,
        chain_keys: list[str] | None = None, skip: Collection[str] | None = None) -> bool:
    """Every check; True only if all passed. `keep`: leave the data space running until
    interrupted (Ctrl-C), printing where its nodes are. `rpc_url`: anchor the hospitals' logs
    on that EVM chain, deploying the contract with the first of `chain_keys`. `skip`: names of
    steps to leave out (default: those in $TRUSTSPACE_DEMO_SKIP); each is reported as skipped."""
    from .demo_story import STEPS as STORY_STEPS

    began = time.perf_counter()
    skipped = _skip_from_env() if skip is None else frozenset(skip)
    unknown = skipped - {name for name, _ in [*STEPS, *STORY_STEPS]}
    if unknown:  # a misspelt name would otherwise run the step the caller meant to leave out
        print(f"  ✗ {SKIP_ENV}: no step named {', '.join(sorted(unknown))}", flush=True)
        return False
    table: list[Row] = []
    print("trustspace demo — crypto core self-check", flush=True)
    _run_steps(list(STEPS), table, skipped)
    if with_dataspace:
        from .demo_story import Chain, Story

        print("trustspace demo — a data space on this machine (real processes, loopback)",
              flush=True)
        setting_up = time.perf_counter()
        chain = None
        if rpc_url is not None:
            try:
                chain = Chain.deploy(rpc_url, chain_keys or [])
            except Exception as exc:  # no chain, no story: say why
                print(f"  ✗ chain: {type(exc).__name__}: {exc}", flush=True)
                return False
            print(f"  the hospitals' logs are anchored on {rpc_url}, contract {chain.contract}",
                  flush=True)
        root = Path(tempfile.mkdtemp(prefix="trustspace-demo-"))
        try:
            with local_dataspace(root) as space:
                table.append(("set-up: authority" + (", chain" if chain else ""), "",
                              time.perf_counter() - setting_up))
                _run_steps(Story(space, chain).steps(), table, skipped)
                if keep:
                    _keep(space)
        finally:
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
    _summary(table, time.perf_counter() - began)
    results = [result for _, result, _ in table if result]
    total, passed = results.count("pass") + results.count("FAIL"), results.count("pass")
    left_out = [name for name, result, _ in table if result == "skipped"]
    print(f"{passed} of {total} checks passed"
          + (f", {len(left_out)} skipped ({', '.join(left_out)})" if left_out else ""))
    return passed == total


def _keep(space: LocalDataSpace) -> None:
    print(f"\nthe data space keeps running in {space.root} (Ctrl-C stops it):")
    for node in [space.authority, *space.members.values()]:
        print(f"  {node.name:20} {node.url}  --home {node.home}  token {node.home}/operator.token")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping")
