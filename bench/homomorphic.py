"""Benchmark homomorphic mode (issue 8): each catalog program on N = 1,000 / 10,000 / 100,000
rows, through trustspace, beside the same computation written directly in TenSEAL and beside
plaintext NumPy, with the bytes each side sends.

Run from the repository root::

    .venv/bin/python bench/homomorphic.py                   # 4.5-5.5 minutes (2-core VM)
    .venv/bin/python bench/homomorphic.py --quick           # N = 1,000 only, 3 rounds, ~15 s
    .venv/bin/python bench/homomorphic.py --rows 100000 --programs linear_scores
    .venv/bin/python bench/homomorphic.py --repeat 9        # rounds per case (default 7)
    .venv/bin/python bench/homomorphic.py --profile DIR     # + cProfile of trustspace's step
    .venv/bin/python bench/homomorphic.py --json out.json   # the results as JSON too

**Data** (bundled in installed packages, no download):

- the CKKS programs take the 30 features of scikit-learn's Wisconsin breast-cancer table
  (`load_breast_cancer`, 569 rows × 30, BSD-3), resampled with replacement to N rows (seed 8).
  `column_sums` / `column_means` take the features in their own units; `weighted_sum`,
  `linear_scores` and `logistic_scores` take them standardised (z-scores with the 569 rows'
  mean and standard deviation), scored with 30 weights drawn from N(0, 0.1) (seed 8), so the
  scores (|s| <= 2.1) stay inside the sigmoid approximation's range [-5, 5];
- `exact_count_sum` (BFV) takes the RAND Health Insurance Experiment table bundled in
  statsmodels (`randhie`, 20,190 rows, BSD-3), resampled to N rows the same way: the integer
  column `mdvis` (doctor visits) summed and counted under the consumer's encrypted selection
  `idp == 1` (individual deductible plan).

**What is timed**, per program and N, in rounds after one uncounted warm-up round: at least 7
(quick: 3), more while they fit in 6 s (quick: none), at most 4× as many. In every round the
trustspace and raw provider steps run in a shuffled order, so drift in the machine's speed hits
both alike. Every figure is this process's **CPU time** (`time.process_time`), wall time
beside: the machine is shared, and CPU time is far less disturbed by other processes; TenSEAL's
vector operations and this bench run on one thread, so on a quiet machine the two agree.

- *trustspace*, the provider's step: `load_public_context(public, max_bytes=...)` (the
  size limit, the secret-key and 128-bit checks, TenSEAL's parse, the loaded-parameters check)
  then `run_program(name, ctx, inputs, table, columns, policy)` (policy and table checks, the
  ciphertext size limit and size checks, evaluation with the plaintext masks, serialisation of
  the results). The limits are the node's (`trustspace.sandbox.he_jobs`). The policy allows
  the program and the columns, per-row results (per-row programs and the BFV selection need
  it), at least 100 rows, no noise (so the results can be checked against NumPy).
- *raw TenSEAL*: the same computation written directly with `tenseal` calls: `context_from`,
  `ckks_vector_from` / `bfv_vector_from` of every input, the *same* homomorphic operations as
  trustspace performs (the same zero-padded plaintext columns and masks, the same 4,096-row
  CKKS / 2,048-row BFV chunks, the same provider-side rotate-and-sum; without them the result
  would release other slots and not be the same computation), with the plaintexts passed as
  NumPy arrays, then `serialize`. No checks, no wrappers.
  **Framework overhead** = median over rounds of (trustspace ÷ raw of the same round) − 1;
  the target is ≤ 10%.
- *NumPy*: the same result computed in the clear on the same table (`X.sum(0)`,
  `X.mean(0)`, `X.sum(0) @ w`, `X @ w`, the sigmoid polynomial of `X @ w`, the selection's count
  and `y @ s`); median of batches of at least 20 ms, BLAS limited to one thread (as TenSEAL
  runs). **Price of privacy** = trustspace ÷ NumPy.
- *consumer*: `new_context(program)` once per program (key generation and the public
  context's serialisation), `encrypt_inputs` and `decrypt_result` in every round.

**Bytes** each way: the public context and the input ciphertexts (consumer → provider), and
the result ciphertexts (provider → consumer); the raw results' size is given beside.

**Correctness**: after the warm-up round, the decrypted trustspace and raw results are compared
with NumPy: for CKKS |got − want| / max(1, |want|) below the tolerance of
tests/test_homomorphic.py, for BFV exactly. A mismatch stops the bench with exit status 1.

CPU time over wall time is recorded for the provider steps: below 0.85 another process took
our CPU meanwhile, and the report says so. Nothing is pinned. ``--profile DIR`` adds a cProfile
(CPU time) of one trustspace provider step per case, its top entries in the report.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import functools
import gc
import importlib.metadata
import json
import os
import platform
import pstats
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts  # type: ignore[import-untyped]
from _common import cpu_model, progress
from threadpoolctl import threadpool_limits  # scikit-learn's dependency

from trustspace.homomorphic import (
    CATALOG,
    SIGMOID_DEG3,
    HomomorphicPolicy,
    PrivateContext,
    decrypt_result,
    encrypt_inputs,
    load_public_context,
    new_context,
    run_program,
)
from trustspace.sandbox.he_jobs import MAX_CIPHERTEXT_BYTES, MAX_CONTEXT_BYTES

PROGRAMS = ("column_sums", "column_means", "weighted_sum", "linear_scores", "logistic_scores",
            "exact_count_sum")
ROWS = (1_000, 10_000, 100_000)
TARGET_OVERHEAD = 0.10  # trustspace / raw TenSEAL - 1
SEED = 8
MIN_ROWS = 100  # the policy's k
# CKKS tolerances, |got - want| / max(1, |want|): those of tests/test_homomorphic.py
RTOL = {"column_sums": 1e-7, "column_means": 1e-7, "weighted_sum": 1e-5,
        "linear_scores": 1e-4, "logistic_scores": 1e-4}
NUMPY_BATCH_SECONDS = 0.02
BUSY = 0.85  # below this share of CPU time over wall time, something else took our CPU

Array = npt.NDArray[np.float64]


# ==== data ======================================================================================

@functools.cache
def _cancer() -> tuple[Array, tuple[str, ...]]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return np.asarray(d.data, dtype=np.float64), tuple(str(n) for n in d.feature_names)


@functools.cache
def _randhie() -> tuple[Array, npt.NDArray[np.int64]]:
    import statsmodels.api as sm

    df = sm.datasets.randhie.load_pandas().data
    return (df["mdvis"].to_numpy(np.float64).reshape(-1, 1),
            (df["idp"] == 1).to_numpy(np.int64))


def _resample(n_source: int, n: int, salt: int) -> npt.NDArray[np.intp]:
    return np.random.default_rng([SEED, salt, n]).integers(0, n_source, n)


@dataclass
class Case:
    """One program on one table: what the provider holds and what the consumer sends."""

    program: str
    rows: int
    table: Array
    columns: list[str]
    weights: Array | None = None
    selection: npt.NDArray[np.int64] | None = None

    @property
    def n_values(self) -> int:
        """How many values the consumer keeps (`decrypt_result`'s n_values)."""
        if CATALOG[self.program].per_row:
            return self.rows
        return {"weighted_sum": 1, "exact_count_sum": 2}.get(self.program, len(self.columns))

    @property
    def policy(self) -> HomomorphicPolicy:
        return HomomorphicPolicy(programs=frozenset({self.program}),
                                 columns=frozenset(self.columns), per_row_allowed=True,
                                 min_rows=MIN_ROWS)

    @property
    def dataset(self) -> str:
        if self.program == "exact_count_sum":
            return "randhie mdvis, selection idp == 1"
        if self.program in ("column_sums", "column_means"):
            return "breast cancer, 30 features"
        return "breast cancer, 30 z-scored features"


def make_case(program: str, rows: int) -> Case:
    if program == "exact_count_sum":
        y, idp = _randhie()
        idx = _resample(len(y), rows, 2)
        return Case(program, rows, np.ascontiguousarray(y[idx]), ["mdvis"],
                    selection=idp[idx])
    x, names = _cancer()
    table = x[_resample(len(x), rows, 1)]
    if program not in ("column_sums", "column_means"):
        table = (table - x.mean(axis=0)) / x.std(axis=0)
        weights = np.random.default_rng(SEED).normal(0.0, 0.1, x.shape[1])
        return Case(program, rows, np.ascontiguousarray(table), list(names), weights=weights)
    return Case(program, rows, np.ascontiguousarray(table), list(names))


# ==== the three ways to compute it ==============================================================

def numpy_result(case: Case) -> Array:
    """The same result in the clear (what the consumer would get without privacy)."""
    x, w = case.table, case.weights
    if case.program == "column_sums":
        return x.sum(axis=0)
    if case.program == "column_means":
        return x.mean(axis=0)
    if case.program == "weighted_sum":
        assert w is not None
        return np.array([x.sum(axis=0) @ w])
    if case.program == "linear_scores":
        assert w is not None
        return x @ w
    if case.program == "logistic_scores":
        assert w is not None
        s = x @ w
        c0, c1, c2, c3 = SIGMOID_DEG3
        return c0 + s * (c1 + s * (c2 + s * c3))
    assert case.selection is not None
    return np.array([case.selection.sum(), case.selection @ x[:, 0]], dtype=np.float64)


def trustspace_provider(case: Case, public: bytes, inputs: Sequence[bytes]) -> list[bytes]:
    """The provider's step through trustspace, as the node's evaluator calls it."""
    ctx = load_public_context(public, max_bytes=MAX_CONTEXT_BYTES)
    return run_program(case.program, ctx, inputs, case.table, case.columns, case.policy,
                       max_ciphertext_bytes=MAX_CIPHERTEXT_BYTES)


def _pad(values: Array, slots: int) -> Array:
    out = np.zeros(slots)
    out[: len(values)] = values
    return out


def _dot(ws: list[Any], columns: Array, slots: int) -> Any:
    """Σ_j enc(w_j in every slot) × zero-padded column j."""
    acc = None
    for j, w in enumerate(ws):
        term = w * _pad(columns[:, j], slots)
        acc = term if acc is None else acc + term
    return acc


def raw_provider(case: Case, public: bytes, inputs: Sequence[bytes]) -> list[bytes]:
    """The same computation written directly in TenSEAL: no checks, no wrappers."""
    ctx = ts.context_from(public)
    x, name = case.table, case.program
    if name in ("column_sums", "column_means"):
        agg = x.sum(axis=0) if name == "column_sums" else x.mean(axis=0)
        return [ts.ckks_vector(ctx, agg).serialize()]
    if name == "exact_count_sum":
        slots = 2048  # one BFV batching row at N = 4096, as trustspace
        sels = [ts.bfv_vector_from(ctx, b) for b in inputs]
        ints = x[:, 0].astype(np.int64)
        count = total = None
        for i, sel in enumerate(sels):
            values = np.zeros(slots, dtype=np.int64)
            part = ints[i * slots : (i + 1) * slots]
            values[: len(part)] = part
            term = sel * values
            count = sel if count is None else count + sel
            total = term if total is None else total + term
        assert count is not None and total is not None
        return [(count.sum() * [1]).serialize(), total.sum().serialize()]
    slots = 4096  # CKKS N = 8192
    ws = [ts.ckks_vector_from(ctx, b) for b in inputs]
    if name == "weighted_sum":
        return [_dot(ws, x.sum(axis=0).reshape(1, -1), slots).serialize()]
    out = []
    for start in range(0, len(x), slots):
        chunk = x[start : start + slots]
        scores = _dot(ws, chunk, slots)
        if name == "logistic_scores":
            c0, c1, c2, c3 = SIGMOID_DEG3
            scores = scores.polyval([0.0, c1, c2, c3]) + _pad(np.full(len(chunk), c0), slots)
        out.append(scores.serialize())
    return out


def raw_decrypt(priv: PrivateContext, case: Case, results: Sequence[bytes]) -> Array:
    """The consumer's reading of the raw results (the released slots only)."""
    load = ts.bfv_vector_from if case.program == "exact_count_sum" else ts.ckks_vector_from
    vecs = [load(priv.ts.raw, r).decrypt() for r in results]
    if case.program == "exact_count_sum":
        return np.array([vecs[0][0], vecs[1][0]], dtype=np.float64)
    flat = [v for vec in vecs for v in vec]
    return np.asarray(flat[: case.n_values], dtype=np.float64)


def check(case: Case, got: Array, want: Array, what: str) -> float:
    """The largest error; SystemExit on a wrong result."""
    if got.shape != want.shape:
        raise SystemExit(f"WRONG: {case.program} N={case.rows} {what}: shape {got.shape}, "
                         f"NumPy {want.shape}")
    if case.program == "exact_count_sum":
        if not np.array_equal(got, want):
            raise SystemExit(f"WRONG: {case.program} N={case.rows} {what}: {got.tolist()}, "
                             f"NumPy {want.tolist()} (BFV must be exact)")
        return 0.0
    err = float((np.abs(got - want) / np.maximum(1.0, np.abs(want))).max())
    if not err < RTOL[case.program]:
        raise SystemExit(f"WRONG: {case.program} N={case.rows} {what}: error {err:.2e} > "
                         f"{RTOL[case.program]:g}")
    return err


# ==== measuring =================================================================================

@dataclass
class Timed:
    """Samples of one step: process CPU time (the figure the report uses) and wall time."""

    ms: list[float] = field(default_factory=list)  # CPU
    wall_ms: list[float] = field(default_factory=list)

    def add(self, fn: Callable[[], Any]) -> Any:
        gc.collect()
        cpu, start = time.process_time(), time.perf_counter()
        value = fn()
        self.wall_ms.append((time.perf_counter() - start) * 1e3)
        self.ms.append((time.process_time() - cpu) * 1e3)
        return value

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_ms)

    @property
    def share(self) -> float:
        """CPU time over wall time, summed over the samples."""
        return sum(self.ms) / sum(self.wall_ms)


@dataclass
class Result:
    program: str
    rows: int
    dataset: str
    columns: int
    rounds: int
    trustspace: Timed
    raw: Timed
    encrypt: Timed
    decrypt: Timed
    numpy_ms: float
    keygen_ms: float
    context_bytes: int
    input_bytes: int
    inputs: int
    result_bytes: int
    results: int
    raw_result_bytes: int
    error: float
    raw_error: float
    profile: list[str] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.trustspace.ms, self.raw.ms, strict=True)]

    @property
    def overhead(self) -> float:
        return statistics.median(self.ratios) - 1.0

    @property
    def verdict(self) -> str:
        return "PASS" if self.overhead <= TARGET_OVERHEAD else "BELOW"

    @property
    def busy(self) -> float:
        return min(self.trustspace.share, self.raw.share)


def numpy_ms(fn: Callable[[], Any], rounds: int) -> float:
    """CPU ms per call, median over `rounds` batches of at least NUMPY_BATCH_SECONDS, with
    BLAS on one thread like TenSEAL (OpenBLAS's threads spin while they wait: on a busy machine
    their CPU time, not the work, would dominate `X @ w`)."""
    with threadpool_limits(limits=1):
        return _numpy_ms(fn, rounds)


def _numpy_ms(fn: Callable[[], Any], rounds: int) -> float:
    loops = 1
    while True:
        start = time.process_time()
        for _ in range(loops):
            fn()
        if time.process_time() - start >= NUMPY_BATCH_SECONDS:
            break
        loops *= 2
    per_call = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(loops):
            fn()
        per_call.append((time.process_time() - start) / loops * 1e3)
    return statistics.median(per_call)


@functools.cache
def consumer_context(program: str) -> tuple[PrivateContext, bytes, float]:
    start = time.process_time()
    priv, public = new_context(program)
    return priv, public, (time.process_time() - start) * 1e3


def measure(program: str, rows: int, rounds: int, budget: float, profile: Path | None
            ) -> Result:
    """`rounds` rounds, or more (up to 4×) while they fit in `budget` seconds."""
    case = make_case(program, rows)
    priv, public, keygen_ms = consumer_context(program)
    want = numpy_result(case)
    ts_t, raw_t, enc_t, dec_t = Timed(), Timed(), Timed(), Timed()

    def encrypt() -> list[bytes]:
        return encrypt_inputs(priv, weights=case.weights, selection=case.selection)

    # warm-up round, not counted: check both results against NumPy
    began = time.perf_counter()
    inputs = encrypt()
    results = trustspace_provider(case, public, inputs)
    raw_results = raw_provider(case, public, inputs)
    error = check(case, decrypt_result(priv, results, n_values=case.n_values), want,
                  "trustspace")
    raw_error = check(case, raw_decrypt(priv, case, raw_results), want, "raw TenSEAL")
    warm = time.perf_counter() - began
    rounds = min(max(rounds, int(budget / warm)), 4 * rounds)

    for _ in range(rounds):
        inputs = enc_t.add(encrypt)
        steps = [("trustspace", ts_t, trustspace_provider), ("raw", raw_t, raw_provider)]
        random.shuffle(steps)
        for what, timer, step in steps:
            out = timer.add(functools.partial(step, case, public, inputs))
            if what == "trustspace":
                results = out
        got = dec_t.add(functools.partial(decrypt_result, priv, results, n_values=case.n_values))
    check(case, got, want, "trustspace, last round")

    lines: list[str] = []
    if profile is not None:
        lines = profile_step(case, public, inputs, profile)
    return Result(
        program=program, rows=rows, dataset=case.dataset, columns=len(case.columns),
        rounds=rounds, trustspace=ts_t, raw=raw_t, encrypt=enc_t, decrypt=dec_t,
        numpy_ms=numpy_ms(lambda: numpy_result(case), rounds), keygen_ms=keygen_ms,
        context_bytes=len(public), input_bytes=sum(map(len, inputs)), inputs=len(inputs),
        result_bytes=sum(map(len, results)), results=len(results),
        raw_result_bytes=sum(map(len, raw_results)), error=error, raw_error=raw_error,
        profile=lines)


def profile_step(case: Case, public: bytes, inputs: Sequence[bytes], folder: Path) -> list[str]:
    """cProfile of one trustspace provider step; the top entries by own time."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case.program}-{case.rows}.prof"
    prof = cProfile.Profile(time.process_time)  # CPU time: robust on a shared machine
    prof.runcall(trustspace_provider, case, public, inputs)
    prof.dump_stats(path)
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_, calls, own, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}({func})" if line else func
        rows.append((own, calls, cum, where))
    rows.sort(reverse=True)
    return [f"{own * 1e3:8.1f} ms own {cum * 1e3:8.1f} ms cum {calls:6d}× {where}"
            for own, calls, cum, where in rows[:8]] + [f"{total * 1e3:8.1f} ms in all"]


# ==== the report ================================================================================

def _kb(n: float) -> str:
    return f"{n / 1e3:,.0f} KB" if n < 1e6 else f"{n / 1e6:,.1f} MB"


def _ms(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def render(results: list[Result], meta: dict[str, Any]) -> str:
    out = [f"# Homomorphic mode ({meta['date']}, nproc {meta['nproc']}, {meta['cpu']}, "
           f"Python {meta['python']}, tenseal {meta['tenseal']}, numpy {meta['numpy']})", "",
           "CPU ms of this process, medians over the rounds (wall times below); overhead = "
           "median of the rounds' trustspace ÷ raw − 1 (target ≤ "
           f"{TARGET_OVERHEAD:.0%}); privacy × = trustspace ÷ NumPy.", "",
           "| program | N | rounds | trustspace ms | raw TenSEAL ms | overhead | target | "
           "NumPy ms | "
           "privacy × | encrypt ms | decrypt ms | context → | inputs → | ← results | "
           "error |",
           "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        err = "exact" if r.program == "exact_count_sum" else f"{r.error:.1e}"
        out.append(
            f"| {r.program} | {r.rows:,} | {r.rounds} | {_ms(r.trustspace.median)} | "
            f"{_ms(r.raw.median)} | "
            f"{r.overhead:+.1%} | {r.verdict} | {r.numpy_ms:.3f} | "
            f"{r.trustspace.median / r.numpy_ms:,.0f} | {_ms(r.encrypt.median)} | "
            f"{_ms(r.decrypt.median)} | {_kb(r.context_bytes)} | "
            f"{r.inputs} ct, {_kb(r.input_bytes)} | {r.results} ct, {_kb(r.result_bytes)} | "
            f"{err} |")
    out += ["", "Per program (consumer side, once): `new_context` (key generation and the public "
            "context's serialisation) and the data.", "",
            "| program | scheme, context | new_context ms | public context | data |",
            "|---|---|--:|--:|---|"]
    seen = set()
    for r in results:
        if r.program in seen:
            continue
        seen.add(r.program)
        p = CATALOG[r.program]
        keys = ", ".join(k for k, on in (("relin keys", p.needs_relin),
                                         ("Galois keys", p.needs_galois)) if on) or "no keys"
        out.append(f"| {r.program} | {p.scheme.value.upper()} {p.poly_modulus_degree} "
                   f"{list(p.coeff_modulus_bits)}, {keys} | {_ms(r.keygen_ms)} | "
                   f"{_kb(r.context_bytes)} | {r.dataset} |")
    out += ["", "Spread: CPU ms min / max over the rounds, the paired ratios' min / max, "
            "wall-clock medians, our CPU share of the wall clock (1.00 on a quiet machine), "
            "the raw results' size and error:", "",
            "| program | N | trustspace min / max | raw min / max | ratio min / max | "
            "trustspace wall | raw wall | CPU / wall | raw ← results | raw error |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        t, w = sorted(r.trustspace.ms), sorted(r.raw.ms)
        err = "exact" if r.program == "exact_count_sum" else f"{r.raw_error:.1e}"
        out.append(f"| {r.program} | {r.rows:,} | {_ms(t[0])} / {_ms(t[-1])} | "
                   f"{_ms(w[0])} / {_ms(w[-1])} | {min(r.ratios):.2f} / {max(r.ratios):.2f} | "
                   f"{_ms(r.trustspace.wall)} | {_ms(r.raw.wall)} | {r.busy:.2f} | "
                   f"{_kb(r.raw_result_bytes)} | {err} |")
    for r in results:
        if r.profile:
            out += ["", f"cProfile of one trustspace step, {r.program}, N = {r.rows:,} (CPU "
                    "time, top entries by own time; profiling slows Python more than C++):", "",
                    "```", *r.profile, "```"]
    warn = [f"{r.program} N={r.rows:,} ({r.busy:.2f})" for r in results if r.busy < BUSY]
    if warn:
        out += ["", "warning: other processes took our CPU (CPU / wall below "
                f"{BUSY}): {', '.join(warn)}. The CPU-time figures hold up better than the "
                "wall times, but caches were shared."]
    out += ["", f"Load average before / after: {meta['load_before']} / {meta['load_after']}. "
            f"Peak RSS {meta['max_rss_mb']:,.0f} MB. Whole run {meta['seconds']:.0f} s."]
    return "\n".join(out)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="N = 1,000 only, 3 rounds: about 15 s")
    parser.add_argument("--rows", help="comma-separated N (default 1000,10000,100000)")
    parser.add_argument("--programs", help=f"comma-separated (default all: {','.join(PROGRAMS)})")
    parser.add_argument("--repeat", type=int,
                        help="rounds per case at least (default 7; quick 3); more, up to 4×, "
                             "while they fit in --budget")
    parser.add_argument("--budget", type=float,
                        help="seconds per case for extra rounds (default 6; quick 0)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="then cProfile one trustspace step per case into DIR")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    rows = [int(n) for n in args.rows.split(",")] if args.rows else \
        [ROWS[0]] if args.quick else list(ROWS)
    programs = args.programs.split(",") if args.programs else list(PROGRAMS)
    unknown = set(programs) - set(CATALOG)
    if unknown:
        parser.error(f"unknown programs {sorted(unknown)}")
    rounds = args.repeat or (3 if args.quick else 7)
    budget = args.budget if args.budget is not None else 0.0 if args.quick else 6.0
    random.seed(SEED)
    began, load_before = time.perf_counter(), _load()
    results = []
    for program in programs:
        for n in rows:
            progress(f"{program}, N = {n:,} ...")
            results.append(measure(program, n, rounds, budget, args.profile))
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "nproc": os.cpu_count(), "python": platform.python_version(),
        "tenseal": importlib.metadata.version("tenseal"), "numpy": np.__version__,
        "kernel": platform.release(), "load_before": load_before, "load_after": _load(),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - began,
    }
    print(render(results, meta))
    if args.json is not None:
        payload = {"meta": meta, "results": [
            {**asdict(r), "overhead": r.overhead, "verdict": r.verdict} for r in results]}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
