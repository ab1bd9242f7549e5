"""Homomorphic jobs between real nodes on loopback: the consumer's CLI makes a TenSEAL context,
encrypts its weights, sends the public context and ciphertexts as a job; the provider's node
runs a catalog program in the sandbox on 20,190 real rows (RAND Health Insurance Experiment,
shipped with statsmodels) and sends back ciphertexts only the consumer can decrypt, with a
delivery receipt both sign. Refusals end TERMINATED with a refusal receipt."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import statsmodels.api as sm

from tests import nodes
from tests.nodes import DataSpace, NodeProcess, dataspace, product_spec, research_offer, wait_for
from tests.test_homomorphic import unsafe_context_bytes
from trustspace.crypto import SM2PrivateKey, sm3
from trustspace.homomorphic import SIGMOID_DEG3, encrypt_inputs, new_context
from trustspace.homomorphic._tenseal import new_ckks
from trustspace.homomorphic.payload import pack
from trustspace.ledger.receipts import verify_receipt
from trustspace.sandbox.he_jobs import parameters

pytestmark = pytest.mark.slow

COLUMNS = ["lncoins", "lpi", "fmde", "physlm", "disea", "hlthg", "hlthf", "hlthp"]
RTOL = {"column_sums": 1e-7, "column_means": 1e-7, "weighted_sum": 1e-5,
        "linear_scores": 1e-4, "logistic_scores": 1e-4}
WEIGHTS = np.random.default_rng(8).normal(0.0, 0.1, len(COLUMNS))


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    df = sm.datasets.randhie.load_pandas().data
    df["mdvis"] = df["mdvis"].astype(int)
    df["idp"] = df["idp"].astype(int)
    path = tmp_path_factory.mktemp("he-data") / "randhie.csv"
    df[["mdvis", "idp", *COLUMNS]].to_csv(path, index=False)
    return path, df


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory, table: tuple[Path, Any]
          ) -> Iterator[DataSpace]:
    root = tmp_path_factory.mktemp("he")
    path, _ = table
    with dataspace(root, "sqlite") as ds:
        provider = ds.add_member("tax-bureau", "provider")
        ds.add_member("bank", "consumer")
        ds.add_member("regulator", "regulator")
        spec = product_spec(root / "unused.csv", "rand-hie")
        per_row = research_offer(["homomorphic"], **{"@id": "per-row"})
        aggregates = research_offer(["homomorphic"], **{"@id": "aggregates"})
        aggregates["permission"][0]["constraint"].append(
            {"leftOperand": "ts:minAggregation", "operator": "gteq", "rightOperand": "10"})
        spec.update({
            "title": "RAND Health Insurance Experiment",
            "columns": [{"name": "mdvis", "type": "integer"}, {"name": "idp", "type": "integer"},
                        *({"name": c, "type": "number"} for c in COLUMNS)],
            "preview": [], "source": {"kind": "csv", "path": str(path)},
            "modes": ["sandbox", "homomorphic"], "offers": [per_row, aggregates],
            "homomorphic": {"programs": ["column_sums", "column_means", "weighted_sum",
                                         "linear_scores", "logistic_scores",
                                         "exact_count_sum"],
                            "columns": [*COLUMNS, "mdvis"], "per_row": True}})
        provider.ok("POST", "/api/products", spec)
        yield ds


def agree(space: DataSpace, offer: str) -> str:
    return nodes.agree(space.members["bank"], space.members["tax-bureau"], "rand-hie", offer)


@pytest.fixture(scope="module")
def per_row(space: DataSpace) -> str:
    return agree(space, "per-row")


@pytest.fixture(scope="module")
def aggregates_only(space: DataSpace) -> str:
    return agree(space, "aggregates")


def he_run(node: NodeProcess, agreement: str, program: str, tmp: Path, *extra: str
           ) -> tuple[Any, dict[str, Any] | None]:
    out = tmp / f"{program}.json"
    done = node.cli("he", "run", agreement, program, "--purpose", "research",
                    "--output", str(out), *extra)
    return done, (json.loads(out.read_text()) if done.returncode == 0 else None)


def expected(program: str, x: np.ndarray) -> np.ndarray:
    s = x @ WEIGHTS
    c0, c1, c2, c3 = SIGMOID_DEG3
    return {"column_sums": x.sum(axis=0), "column_means": x.mean(axis=0),
            "weighted_sum": np.array([s.sum()]), "linear_scores": s,
            "logistic_scores": c0 + c1 * s + c2 * s**2 + c3 * s**3}[program]


def receipt(node: NodeProcess, receipt_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        shown = node.ok("GET", f"/api/receipts/{receipt_id}")
        return shown if shown["status"] == "logged" else None

    return dict(wait_for(check))


def party_keys(space: DataSpace) -> dict[str, Any]:
    return {f"urn:trustspace:participant:{n}": SM2PrivateKey.from_pem(
        (space.members[n].home / "node-key.pem").read_bytes()).public_key
        for n in ("tax-bureau", "bank")}


@pytest.mark.parametrize("program", list(RTOL))
def test_ckks_programs_match_numpy(space: DataSpace, per_row: str, table: tuple[Path, Any],
                                   tmp_path: Path, program: str) -> None:
    consumer = space.members["bank"]
    (tmp_path / "w.json").write_text(json.dumps(WEIGHTS.tolist()))
    weights = ("--input", str(tmp_path / "w.json")) if program not in (
        "column_sums", "column_means") else ()
    done, result = he_run(consumer, per_row, program, tmp_path, "--columns", ",".join(COLUMNS),
                          *weights)
    assert done.returncode == 0, done.stderr
    assert result is not None
    x = table[1][COLUMNS].to_numpy(np.float64)
    assert x.shape[0] >= 10_000 and result["rows"] == x.shape[0]
    want = expected(program, x)
    got = np.asarray(result["values"])
    assert got.shape == want.shape
    err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    assert err.max() < RTOL[program], err.max()


def test_exact_count_sum_and_the_receipt_both_sign(space: DataSpace, per_row: str,
                                                   table: tuple[Path, Any],
                                                   tmp_path: Path) -> None:
    provider, consumer = space.members["tax-bureau"], space.members["bank"]
    df = table[1]
    selection = (df["idp"] == 1).astype(int).to_numpy()
    np.save(tmp_path / "sel.npy", selection)
    done, result = he_run(consumer, per_row, "exact_count_sum", tmp_path, "--columns", "mdvis",
                          "--selection", str(tmp_path / "sel.npy"))
    assert done.returncode == 0, done.stderr
    assert result is not None
    assert result["values"] == [float(selection.sum()),
                                float(df["mdvis"].to_numpy()[selection == 1].sum())]

    mine = consumer.ok("GET", f"/api/jobs/{result['pid']}")
    assert mine["mode"] == "homomorphic" and mine["resultDigest"] == result["resultDigest"]
    encrypted = consumer.ok("GET", f"/api/jobs/{result['pid']}/result")["encrypted"]
    assert "sm3:" + sm3(base64.b64decode(encrypted)).hex() == result["resultDigest"]
    theirs = provider.ok("GET", f"/api/jobs/{mine['providerPid']}")
    assert theirs["parameters"]["program"] == "exact_count_sum"
    # BFV at N=4096 packs 2048 values per ciphertext in a TenSEAL vector
    assert len(theirs["parameters"]["inputDigests"]) == -(-len(selection) // 2048)
    logged = receipt(provider, mine["receiptId"])
    delivery = verify_receipt(logged["document"], party_keys(space))
    assert list(delivery.roles) == ["provider", "consumer"]
    assert delivery.public["mode"] == "homomorphic"
    assert delivery.public["codeDigest"] == mine["codeDigest"]  # context + encrypted inputs
    assert delivery.public["resultDigest"] == result["resultDigest"]
    assert delivery.public["rows"] == len(df)
    sealed = delivery.open(SM2PrivateKey.from_pem(
        (consumer.home / "node-key.pem").read_bytes()))
    assert sealed is not None
    assert sealed["parameters"]["inputDigests"] == theirs["parameters"]["inputDigests"]
    assert sealed["parameters"]["contextDigest"] == theirs["parameters"]["contextDigest"]


def _refused(node: NodeProcess, space: DataSpace, done: Any, code: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert code in done.stderr, done.stderr
    job = node.ok("GET", "/api/jobs")["jobs"][0]
    assert job["state"] == "TERMINATED" and job["reason"]["code"] == code
    assert job["outcome"] == "refused"
    assert receipt(space.members["tax-bureau"], job["receiptId"])["kind"] == "refusal"


def test_per_row_scores_under_an_aggregates_only_agreement_are_refused(
        space: DataSpace, aggregates_only: str, tmp_path: Path) -> None:
    consumer = space.members["bank"]
    (tmp_path / "w.json").write_text(json.dumps(WEIGHTS.tolist()))
    done, _ = he_run(consumer, aggregates_only, "linear_scores", tmp_path,
                     "--columns", ",".join(COLUMNS), "--input", str(tmp_path / "w.json"))
    _refused(consumer, space, done, "he-per-row-not-allowed")
    # the same agreement still serves an aggregate
    done, result = he_run(consumer, aggregates_only, "weighted_sum", tmp_path,
                          "--columns", ",".join(COLUMNS), "--input", str(tmp_path / "w.json"))
    assert done.returncode == 0, done.stderr


def test_a_column_the_operator_did_not_enable_is_refused(space: DataSpace, per_row: str,
                                                         tmp_path: Path) -> None:
    done, _ = he_run(space.members["bank"], per_row, "column_sums", tmp_path,
                     "--columns", "lncoins,idp")
    _refused(space.members["bank"], space, done, "he-column-not-allowed")


def _send(node: NodeProcess, agreement: str, program: str, blobs: list[bytes],
          params: dict[str, Any] | None = None, frame: bytes | None = None) -> dict[str, Any]:
    body = {"agreement": agreement, "mode": "homomorphic", "purpose": "research",
            "code": base64.b64encode(frame if frame is not None else pack(blobs)).decode(),
            "parameters": params or parameters(program, COLUMNS, blobs)}
    shown = node.ok("POST", "/api/jobs", body)
    return dict(wait_for(lambda: (j := node.ok("GET", f"/api/jobs/{shown['pid']}"))["state"]
                         == "TERMINATED" and j, timeout=120))


def _secret_context() -> bytes:
    private = new_ckks(8192, (60, 40, 40, 60), 40, galois=False)
    return private.serialize(secret_key=True, galois_keys=False, relin_keys=False)


@pytest.mark.parametrize(("context", "code"), [
    (_secret_context, "he-secret-key"),
    (lambda: unsafe_context_bytes(2048, [30, 24]), "he-insecure-parameters"),
    (lambda: unsafe_context_bytes(8192, [60, 60, 60, 60]), "he-insecure-parameters"),  # 240 > 218
], ids=["secret-key", "degree-2048", "modulus-above-128-bit-cap"])
def test_unsafe_contexts_are_refused_in_the_sandbox(space: DataSpace, per_row: str,
                                                    context: Any, code: str) -> None:
    job = _send(space.members["bank"], per_row, "column_sums", [context()])
    assert job["reason"]["code"] == code and job["outcome"] == "refused", job["reason"]


def test_a_ciphertext_of_the_wrong_context_is_refused(space: DataSpace, per_row: str) -> None:
    _, public = new_context("weighted_sum")
    other, _ = new_context("weighted_sum")
    inputs = encrypt_inputs(other, weights=WEIGHTS)  # the consumer's other key
    inputs[0] = inputs[0][: len(inputs[0]) // 2]  # and one truncated
    job = _send(space.members["bank"], per_row, "weighted_sum", [public, *inputs])
    assert job["reason"]["code"] in ("he-malformed", "he-wrong-size"), job["reason"]


def test_frames_that_would_exhaust_memory_or_lie_are_refused_at_the_request(
        space: DataSpace, per_row: str) -> None:
    consumer = space.members["bank"]
    _, public = new_context("column_sums")
    # A frame that claims a 1 TiB blob: refused from its length field, before any allocation.
    huge = b"TSHE1\n" + (1).to_bytes(4, "big") + (1 << 40).to_bytes(8, "big") + b"x" * 64
    job = _send(consumer, per_row, "column_sums", [public],
                params=parameters("column_sums", COLUMNS, [public]), frame=huge)
    assert job["reason"]["code"] == "he-too-large", job["reason"]
    # Parameters that name other ciphertexts than the ones sent.
    lying = parameters("column_sums", COLUMNS, [public + b"x"])
    job = _send(consumer, per_row, "column_sums", [public], params=lying)
    assert job["reason"]["code"] == "he-malformed", job["reason"]
    assert "contextDigest" in job["reason"]["detail"]


def test_the_curious_consumer_finds_only_the_scores(space: DataSpace, per_row: str,
                                                    table: tuple[Path, Any],
                                                    tmp_path: Path) -> None:
    """Over the wire too: every slot of every returned ciphertext, past the declared size,
    decrypted with the consumer's own secret key, holds a released score or (nearly) zero."""
    import tenseal as ts

    from tests.test_homomorphic import MASKED_ZERO_TOL, unsafe_widen
    from trustspace.homomorphic import import_private
    from trustspace.homomorphic.payload import unpack

    consumer = space.members["bank"]
    (tmp_path / "w.json").write_text(json.dumps(WEIGHTS.tolist()))
    done, result = he_run(consumer, per_row, "linear_scores", tmp_path,
                          "--columns", ",".join(COLUMNS), "--input", str(tmp_path / "w.json"))
    assert done.returncode == 0 and result is not None, done.stderr
    kept = next((consumer.home / "he").glob(result["pid"].replace(":", "_") + ".ctx"))
    assert kept.stat().st_mode & 0o077 == 0  # the secret key is the owner's alone
    program, _, secret = kept.read_bytes().partition(b"\n")
    raw = import_private(program.decode(), secret).ts.raw
    encrypted = consumer.ok("GET", f"/api/jobs/{result['pid']}/result")["encrypted"]
    _, *ciphertexts = unpack(base64.b64decode(encrypted), max_blobs=100, max_blob_bytes=1 << 24)
    flat = np.concatenate([ts.ckks_vector_from(raw, unsafe_widen(c, 4096)).decrypt()
                           for c in ciphertexts])
    want = expected("linear_scores", table[1][COLUMNS].to_numpy(np.float64))
    released = np.zeros(flat.shape, dtype=bool)
    released[: len(want)] = True
    assert np.abs(flat[released] - want).max() < 1e-3
    assert np.abs(flat[~released]).max() < MASKED_ZERO_TOL
