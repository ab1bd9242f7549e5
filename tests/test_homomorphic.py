"""Homomorphic mode (issue 8), library part: programs against NumPy, refusals, leak guards.

Data: the RAND Health Insurance Experiment table shipped inside statsmodels
(``sm.datasets.randhie``, 20,190 rows, BSD-3), read without network access.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
from functools import cache

import numpy as np
import pytest
import statsmodels.api as sm
import tenseal as ts  # type: ignore[import-untyped]
import tenseal.sealapi as sealapi  # type: ignore[import-untyped]

from trustspace.homomorphic import (
    CATALOG,
    SIGMOID_DEG3,
    HomomorphicPolicy,
    HomomorphicRefused,
    RefusalReason,
    Scheme,
    decrypt_result,
    encrypt_inputs,
    load_ciphertext,
    load_public_context,
    new_context,
    run_program,
)

COLUMNS = ["lncoins", "lpi", "fmde", "physlm", "disea", "hlthg", "hlthf", "hlthp"]
CTX_LIMIT = 16_000_000
CKKS_PROGRAMS = ["column_sums", "column_means", "weighted_sum", "linear_scores",
                 "logistic_scores"]
# CKKS tolerances, absolute after dividing by max(1, |expected|); measured errors are
# 1e-13 .. 2e-6 at 20,190 rows.
RTOL = {"column_sums": 1e-7, "column_means": 1e-7, "weighted_sum": 1e-5,
        "linear_scores": 1e-4, "logistic_scores": 1e-4}
MASKED_ZERO_TOL = 1e-4  # |value| of a zeroed CKKS slot after decryption


@cache
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    df = sm.datasets.randhie.load_pandas().data
    x = df[COLUMNS].to_numpy(np.float64)
    w = np.random.default_rng(8).normal(0.0, 0.1, len(COLUMNS))
    return x, w, df["mdvis"].to_numpy(np.float64).reshape(-1, 1), df["idp"].to_numpy()


def allow_all(**kw: object) -> HomomorphicPolicy:
    base: dict[str, object] = {"programs": frozenset(CATALOG),
                               "columns": frozenset([*COLUMNS, "mdvis"]),
                               "per_row_allowed": True, "min_rows": 100}
    base.update(kw)
    return HomomorphicPolicy(**base)  # type: ignore[arg-type]


def expected(name: str, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    s = x @ w
    c0, c1, c2, c3 = SIGMOID_DEG3
    return {
        "column_sums": x.sum(axis=0),
        "column_means": x.mean(axis=0),
        "weighted_sum": np.array([s.sum()]),
        "linear_scores": s,
        "logistic_scores": c0 + c1 * s + c2 * s**2 + c3 * s**3,
    }[name]


def n_released(name: str, x: np.ndarray) -> int:
    return {"weighted_sum": 1, "exact_count_sum": 2}.get(
        name, x.shape[0] if CATALOG[name].per_row else x.shape[1])


@cache
def run(name: str) -> tuple[object, list[bytes], float]:
    """Consumer encrypts, provider runs on 20,190 rows; returns (private ctx, results, secs)."""
    x, w, y, idp = data()
    priv, public = new_context(name)
    inputs = encrypt_inputs(priv, weights=w, selection=(idp == 1).astype(int))
    t0 = time.perf_counter()
    ctx = load_public_context(public, max_bytes=CTX_LIMIT)
    if name == "exact_count_sum":
        results = run_program(name, ctx, inputs, y, ["mdvis"], allow_all())
    else:
        results = run_program(name, ctx, inputs, x, COLUMNS, allow_all())
    return priv, results, time.perf_counter() - t0


# --- correctness on the real table -------------------------------------------------------------


@pytest.mark.parametrize("name", CKKS_PROGRAMS)
def test_ckks_program_matches_numpy(name: str) -> None:
    x, w, _, _ = data()
    assert x.shape[0] >= 10_000
    priv, results, _ = run(name)
    got = decrypt_result(priv, results, n_values=n_released(name, x))  # type: ignore[arg-type]
    want = expected(name, x, w)
    assert got.shape == want.shape
    err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    assert err.max() < RTOL[name], err.max()


def test_bfv_exact_count_sum_is_exact() -> None:
    _, _, y, idp = data()
    priv, results, _ = run("exact_count_sum")
    got = decrypt_result(priv, results, n_values=2)  # type: ignore[arg-type]
    sel = idp == 1
    assert got.tolist() == [float(sel.sum()), float(y[sel, 0].sum())]


# --- the curious consumer ----------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def unsafe_widen(serialized: bytes, size: int) -> bytes:
    """Rewrite the declared size of a serialized TenSEAL vector (CKKSVectorProto/BFVVectorProto
    field 1) so decryption shows ``size`` slots: what a curious consumer would do."""
    out = bytearray(_varint(1 << 3 | 2) + _varint(len(_varint(size))) + _varint(size))
    pos = 0
    while pos < len(serialized):
        start = pos
        key, pos = _read_varint(serialized, pos)
        wire = key & 7
        if wire == 2:
            length, pos = _read_varint(serialized, pos)
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 0:
            _, pos = _read_varint(serialized, pos)
        if key >> 3 != 1:
            out += serialized[start:pos]
    return bytes(out)


@pytest.mark.parametrize("name", [*CKKS_PROGRAMS, "exact_count_sum"])
def test_curious_consumer_finds_only_released_values(name: str) -> None:
    x, w, y, idp = data()
    priv, results, _ = run(name)
    raw = priv.ts.raw  # type: ignore[attr-defined]
    if name == "exact_count_sum":
        n_slots = 4096  # every BFV slot (both batching rows)
        count, total = (ts.bfv_vector_from(raw, unsafe_widen(r, n_slots)).decrypt()
                        for r in results)
        sel = idp == 1
        assert count[0] == sel.sum() and not any(count[1:])
        # after the provider-side rotate-and-sum: the total in row 1, zeros in row 2
        assert set(total[:2048]) == {int(y[sel, 0].sum())} and not any(total[2048:])
        return
    n_slots = 4096  # every CKKS slot at N = 8192
    slots = [ts.ckks_vector_from(raw, unsafe_widen(r, n_slots)).decrypt() for r in results]
    assert all(len(s) == n_slots for s in slots)
    flat = np.concatenate(slots)
    want = expected(name, x, w)
    # released: the first len(want) slots (per-row programs fill 4096-row chunks in order)
    released = np.zeros(flat.shape, dtype=bool)
    released[: len(want)] = True
    err = np.abs(flat[released] - want) / np.maximum(1.0, np.abs(want))
    assert err.max() < RTOL[name]
    assert np.abs(flat[~released]).max() < MASKED_ZERO_TOL, np.abs(flat[~released]).max()


def test_timings_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        for name in [*CKKS_PROGRAMS, "exact_count_sum"]:
            _, results, secs = run(name)
            print(f"\n{name}: provider {secs * 1000:.0f} ms, "
                  f"{sum(map(len, results)) / 1e3:.0f} KB returned")


# --- refusals ----------------------------------------------------------------------------------


def _save(obj: object) -> bytes:
    fd, path = tempfile.mkstemp()
    os.close(fd)
    try:
        obj.save(path)  # type: ignore[attr-defined]
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def unsafe_context_bytes(degree: int, bits: list[int]) -> bytes:
    """A public TenSEAL context with parameters SEAL would refuse to create (security NONE),
    hand-encoded as TenSEALContextProto: what a careless or hostile consumer could send."""
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(degree)
    parms.set_coeff_modulus(sealapi.CoeffModulus.Create(degree, bits))
    seal_ctx = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.NONE)
    pk = sealapi.PublicKey()
    sealapi.KeyGenerator(seal_ctx).create_public_key(pk)

    def field(num: int, payload: bytes) -> bytes:
        return _varint(num << 3 | 2) + _varint(len(payload)) + payload

    public = field(1, _save(pk)) + _varint(2 << 3) + _varint(7) + _varint(3 << 3 | 1) + \
        struct.pack("<d", 2.0**40)
    return field(1, _save(parms)) + field(2, public)


def refused(reason: RefusalReason) -> pytest.RaisesExc[HomomorphicRefused]:
    return pytest.raises(HomomorphicRefused, match=f"^{reason.value}:")


def test_refuses_context_with_secret_key() -> None:
    priv, _ = new_context("column_sums")
    secret = priv.ts.serialize(secret_key=True, galois_keys=False, relin_keys=False)
    with refused(RefusalReason.SECRET_KEY):
        load_public_context(secret, max_bytes=CTX_LIMIT)


def test_refuses_degree_2048() -> None:
    with refused(RefusalReason.INSECURE_PARAMETERS):
        load_public_context(unsafe_context_bytes(2048, [30, 24]), max_bytes=CTX_LIMIT)


def test_refuses_modulus_above_128_bit_cap() -> None:
    data_ = unsafe_context_bytes(8192, [60, 40, 40, 40, 60])  # 240 bits > 218
    with pytest.raises(HomomorphicRefused) as e:
        load_public_context(data_, max_bytes=CTX_LIMIT)
    assert e.value.reason is RefusalReason.INSECURE_PARAMETERS
    assert "240 bits exceeds the 128-bit cap 218" in e.value.detail
    # the same crafted encoding with secure parameters is accepted: the refusal is the cap
    ok = load_public_context(unsafe_context_bytes(8192, [60, 40, 40, 60]), max_bytes=CTX_LIMIT)
    assert ok.params.total_coeff_modulus_bits == 200


def test_refuses_scheme_not_allowed() -> None:
    _, public = new_context("exact_count_sum")
    with refused(RefusalReason.SCHEME_NOT_ALLOWED):
        load_public_context(public, max_bytes=CTX_LIMIT, allowed_schemes=frozenset({Scheme.CKKS}))


def test_huge_bytes_refused_by_size_before_parsing() -> None:
    huge = b"\x0a\xff\xff\xff\xff\x0f" + bytes(200_000_000)  # claims a 4 GB field
    priv, public = new_context("linear_scores")
    ctx = load_public_context(public, max_bytes=CTX_LIMIT)
    t0 = time.perf_counter()
    with refused(RefusalReason.TOO_LARGE):
        load_public_context(huge, max_bytes=CTX_LIMIT)
    with refused(RefusalReason.TOO_LARGE):
        load_ciphertext(ctx, huge, max_bytes=1_000_000, expected_size=4096)
    assert time.perf_counter() - t0 < 0.05


@pytest.mark.parametrize("junk", [b"", b"garbage" * 100, b"\x0a\x05abc"])
def test_refuses_malformed(junk: bytes) -> None:
    with refused(RefusalReason.MALFORMED):
        load_public_context(junk, max_bytes=CTX_LIMIT)
    _, public = new_context("linear_scores")
    ctx = load_public_context(public, max_bytes=CTX_LIMIT)
    with refused(RefusalReason.MALFORMED):
        load_ciphertext(ctx, junk, max_bytes=1_000_000, expected_size=4096)


def test_refuses_truncated_context_and_foreign_ciphertext() -> None:
    _, public = new_context("linear_scores")
    with refused(RefusalReason.MALFORMED):
        load_public_context(public[: len(public) // 2], max_bytes=CTX_LIMIT)
    ctx = load_public_context(public, max_bytes=CTX_LIMIT)
    other, _ = new_context("logistic_scores")  # different parameters
    foreign = encrypt_inputs(other, weights=[1.0])[0]
    with refused(RefusalReason.MALFORMED):
        load_ciphertext(ctx, foreign, max_bytes=1_000_000, expected_size=4096)


def test_refuses_wrong_vector_size_and_count() -> None:
    x, w, _, _ = data()
    priv, public = new_context("linear_scores")
    ctx = load_public_context(public, max_bytes=CTX_LIMIT)
    short = ts.ckks_vector(priv.ts.raw, [1.0] * 10).serialize()
    with refused(RefusalReason.WRONG_SIZE):
        load_ciphertext(ctx, short, max_bytes=1_000_000, expected_size=4096)
    good = encrypt_inputs(priv, weights=w)
    with refused(RefusalReason.WRONG_SIZE):
        run_program("linear_scores", ctx, [*good[:-1], short], x[:500], COLUMNS, allow_all())
    with refused(RefusalReason.WRONG_SIZE):
        run_program("linear_scores", ctx, good[:-1], x[:500], COLUMNS, allow_all())
    with refused(RefusalReason.TOO_LARGE):
        run_program("linear_scores", ctx, good, x[:500], COLUMNS, allow_all(),
                    max_ciphertext_bytes=1000)


def test_refuses_by_policy() -> None:
    x, w, y, _ = data()
    priv, public = new_context("linear_scores")
    ctx = load_public_context(public, max_bytes=CTX_LIMIT)
    inputs = encrypt_inputs(priv, weights=w)
    sample = x[:500]
    with refused(RefusalReason.PROGRAM_NOT_ALLOWED):
        run_program("linear_scores", ctx, inputs, sample, COLUMNS,
                    allow_all(programs=frozenset({"column_sums"})))
    with refused(RefusalReason.PROGRAM_NOT_ALLOWED):
        run_program("exec_python", ctx, inputs, sample, COLUMNS, allow_all())
    with refused(RefusalReason.COLUMN_NOT_ALLOWED):
        run_program("linear_scores", ctx, inputs, sample, COLUMNS,
                    allow_all(columns=frozenset(COLUMNS[:-1])))
    with refused(RefusalReason.PER_ROW_NOT_ALLOWED):
        run_program("linear_scores", ctx, inputs, sample, COLUMNS,
                    allow_all(per_row_allowed=False))
    with refused(RefusalReason.TOO_FEW_ROWS):
        run_program("linear_scores", ctx, inputs, sample, COLUMNS, allow_all(min_rows=501))
    with refused(RefusalReason.PROGRAM_NOT_ALLOWED):  # fail closed: empty policy
        run_program("column_sums", ctx, [], sample, COLUMNS,
                    HomomorphicPolicy(frozenset(), frozenset()))
    # an aggregate is fine without per-row permission
    assert run_program("column_sums", ctx, [], sample, COLUMNS, allow_all(per_row_allowed=False))


def test_refuses_wrong_context_for_program() -> None:
    x, w, y, idp = data()
    _, shallow = new_context("linear_scores")
    ctx = load_public_context(shallow, max_bytes=CTX_LIMIT)
    with refused(RefusalReason.WRONG_PARAMETERS):  # logistic needs depth 3
        run_program("logistic_scores", ctx, [], x[:500], COLUMNS, allow_all())
    with refused(RefusalReason.WRONG_PARAMETERS):  # BFV program, CKKS context
        run_program("exact_count_sum", ctx, [], y[:500], ["mdvis"], allow_all())
    priv, _ = new_context("exact_count_sum")
    no_galois = priv.ts.serialize(secret_key=False, galois_keys=False, relin_keys=False)
    bctx = load_public_context(no_galois, max_bytes=CTX_LIMIT)
    sel = encrypt_inputs(priv, selection=np.ones(500, dtype=int))
    with refused(RefusalReason.MISSING_KEYS):
        run_program("exact_count_sum", bctx, sel, y[:500], ["mdvis"], allow_all())


def test_refuses_bfv_overflow_and_non_integers() -> None:
    priv, public = new_context("exact_count_sum")
    ctx = load_public_context(public, max_bytes=CTX_LIMIT)
    sel = encrypt_inputs(priv, selection=np.ones(500, dtype=int))
    big = np.full((500, 1), 2000.0)  # sum 1,000,000 >= t/2 = 516,096
    with refused(RefusalReason.OVERFLOW):
        run_program("exact_count_sum", ctx, sel, big, ["mdvis"], allow_all())
    with refused(RefusalReason.BAD_TABLE):
        run_program("exact_count_sum", ctx, sel, big + 0.5, ["mdvis"], allow_all())


def test_aggregate_noise_when_policy_asks() -> None:
    x, _, _, _ = data()
    priv, public = new_context("column_sums")
    ctx = load_public_context(public, max_bytes=CTX_LIMIT)
    res = run_program("column_sums", ctx, [], x, COLUMNS, allow_all(aggregate_noise_std=50.0))
    got = decrypt_result(priv, res, n_values=len(COLUMNS))
    diff = np.abs(got - x.sum(axis=0))
    assert diff.max() > 1e-3 and diff.max() < 500
