"""The fixed program catalog the provider runs on encrypted inputs (never consumer code).

Leak guards (see ../shared/notes/tenseal.md):
- every returned ciphertext has all slots except the released ones zeroed, either by a
  plaintext mask multiplication (the provider's zero-padded column vectors and unit masks) or
  by being a fresh encryption of a zero-padded vector;
- rows are processed in chunks of at most the slot count, checked before evaluating;
- slot-wise partial totals never leave: BFV sums are completed here by rotate-and-sum;
- aggregates need at least ``policy.min_rows`` rows, per-row results need
  ``policy.per_row_allowed``; optional Gaussian noise on released aggregates.
CKKS gives no circuit privacy: the noise of a returned ciphertext may still carry a little
information about the table beyond the released values.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import _tenseal
from .context import PublicContext, ciphertext_byte_limit, load_ciphertext
from .errors import HomomorphicRefused, RefusalReason
from .params import Scheme

#: Degree-3 least-squares approximation of the sigmoid on [-5, 5]
#: (c0, c1, c2, c3): 0.5 + 0.197 x - 0.004 x^3, as in the TenSEAL logistic-regression tutorial.
SIGMOID_DEG3: tuple[float, float, float, float] = (0.5, 0.197, 0.0, -0.004)


class Inputs(enum.Enum):
    """What the consumer encrypts for a program."""

    NONE = "none"
    #: one CKKS ciphertext per column j holding w_j in every slot (no Galois keys needed)
    BROADCAST_WEIGHTS = "broadcast_weights"
    #: a 0/1 selection over the provider's rows, BFV, in chunks of slot_count rows
    ROW_SELECTION = "row_selection"


class Columns(enum.Enum):
    """Which table columns a program takes."""

    NUMERIC = "numeric"  # one or more real columns
    ONE_INTEGER = "one_integer"  # exactly one integer column


@dataclass(frozen=True)
class Program:
    """A catalog entry: what the program computes, takes and needs from the context."""

    name: str
    scheme: Scheme
    inputs: Inputs
    columns: Columns
    per_row: bool  # releases one value per row (needs policy.per_row_allowed)
    min_depth: int  # CKKS rescalings used
    needs_galois: bool
    needs_relin: bool
    # what the consumer's new_context creates
    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]
    scale_bits: int = 40
    plain_modulus: int | None = None


_CKKS = {"scheme": Scheme.CKKS, "poly_modulus_degree": 8192}
_SHALLOW = (60, 40, 40, 60)  # 200 bits <= 218
_DEEP = (49, 40, 40, 40, 49)  # 218 bits, the most depth 8192 allows at 128-bit security

CATALOG: dict[str, Program] = {
    p.name: p
    for p in (
        Program("column_sums", inputs=Inputs.NONE, columns=Columns.NUMERIC, per_row=False,
                min_depth=0, needs_galois=False, needs_relin=False,
                coeff_modulus_bits=_SHALLOW, **_CKKS),  # type: ignore[arg-type]
        Program("column_means", inputs=Inputs.NONE, columns=Columns.NUMERIC, per_row=False,
                min_depth=0, needs_galois=False, needs_relin=False,
                coeff_modulus_bits=_SHALLOW, **_CKKS),  # type: ignore[arg-type]
        Program("weighted_sum", inputs=Inputs.BROADCAST_WEIGHTS, columns=Columns.NUMERIC,
                per_row=False, min_depth=1, needs_galois=False, needs_relin=False,
                coeff_modulus_bits=_SHALLOW, **_CKKS),  # type: ignore[arg-type]
        Program("linear_scores", inputs=Inputs.BROADCAST_WEIGHTS, columns=Columns.NUMERIC,
                per_row=True, min_depth=1, needs_galois=False, needs_relin=False,
                coeff_modulus_bits=_SHALLOW, **_CKKS),  # type: ignore[arg-type]
        Program("logistic_scores", inputs=Inputs.BROADCAST_WEIGHTS, columns=Columns.NUMERIC,
                per_row=True, min_depth=3, needs_galois=False, needs_relin=True,
                coeff_modulus_bits=_DEEP, **_CKKS),  # type: ignore[arg-type]
        Program("exact_count_sum", scheme=Scheme.BFV, inputs=Inputs.ROW_SELECTION,
                columns=Columns.ONE_INTEGER, per_row=False, min_depth=0, needs_galois=True,
                needs_relin=False, poly_modulus_degree=4096, coeff_modulus_bits=(36, 36, 37),
                plain_modulus=1032193),
    )
}


@dataclass(frozen=True)
class HomomorphicPolicy:
    """What the agreement allows. Empty sets refuse everything (fail closed)."""

    programs: frozenset[str]
    columns: frozenset[str]
    per_row_allowed: bool = False
    min_rows: int = 1
    aggregate_noise_std: float = 0.0  # Gaussian noise added to released aggregates


def _refuse(reason: RefusalReason, detail: str) -> HomomorphicRefused:
    return HomomorphicRefused(reason, detail)


def expected_inputs(program: Program, slot_count: int, n_rows: int, n_columns: int) -> int:
    """How many ciphertexts the consumer must send."""
    if program.inputs is Inputs.BROADCAST_WEIGHTS:
        return n_columns
    if program.inputs is Inputs.ROW_SELECTION:
        return math.ceil(n_rows / slot_count)
    return 0


def _check(
    program: Program,
    ctx: PublicContext,
    table: npt.NDArray[np.float64],
    columns: Sequence[str],
    policy: HomomorphicPolicy,
) -> None:
    if program.name not in policy.programs:
        raise _refuse(RefusalReason.PROGRAM_NOT_ALLOWED, f"program {program.name!r}")
    denied = [c for c in columns if c not in policy.columns]
    if denied:
        raise _refuse(RefusalReason.COLUMN_NOT_ALLOWED, f"columns {denied}")
    # A 0/1 selection chosen by the consumer can isolate a single row, and the provider
    # cannot see how many rows it selects: treat it as per-row access.
    if (program.per_row or program.inputs is Inputs.ROW_SELECTION) and not (
        policy.per_row_allowed
    ):
        raise _refuse(RefusalReason.PER_ROW_NOT_ALLOWED, f"program {program.name!r}")
    if table.ndim != 2 or table.shape[1] != len(columns) or len(columns) == 0:
        raise _refuse(RefusalReason.BAD_TABLE, f"table shape {table.shape} for {len(columns)} "
                      "columns")
    if not np.all(np.isfinite(table)):
        raise _refuse(RefusalReason.BAD_TABLE, "table holds NaN or infinity")
    if program.columns is Columns.ONE_INTEGER and (
        table.shape[1] != 1 or not np.all(table == np.round(table))
    ):
        raise _refuse(RefusalReason.BAD_TABLE, "program takes exactly one integer column")
    if table.shape[0] < max(policy.min_rows, 1):
        raise _refuse(RefusalReason.TOO_FEW_ROWS,
                      f"{table.shape[0]} rows, policy needs at least {policy.min_rows}")
    p = ctx.params
    if p.scheme is not program.scheme:
        raise _refuse(RefusalReason.WRONG_PARAMETERS,
                      f"program needs {program.scheme.value}, context is {p.scheme.value}")
    if p.depth < program.min_depth:
        raise _refuse(RefusalReason.WRONG_PARAMETERS,
                      f"program needs depth {program.min_depth}, context has {p.depth}")
    if program.needs_galois and not ctx.has_galois_keys:
        raise _refuse(RefusalReason.MISSING_KEYS, "program needs Galois keys")
    if program.needs_relin and not ctx.has_relin_keys:
        raise _refuse(RefusalReason.MISSING_KEYS, "program needs relinearization keys")


def _noise(policy: HomomorphicPolicy, n: int) -> npt.NDArray[np.float64]:
    if policy.aggregate_noise_std <= 0:
        return np.zeros(n)
    return np.random.default_rng().normal(0.0, policy.aggregate_noise_std, n)


def _padded(values: npt.NDArray[np.float64], slots: int) -> npt.NDArray[np.float64]:
    """``values`` followed by zeros up to ``slots``: the mask that zeroes every other slot.
    An array, which TenSEAL takes without a Python list in between (bench/homomorphic.py)."""
    if len(values) > slots:  # the slot bound: never evaluate past it
        raise _refuse(RefusalReason.EVALUATION_FAILED, f"{len(values)} values > {slots} slots")
    out = np.zeros(slots)
    out[: len(values)] = values
    return out


def _broadcast_dot(
    weights: Sequence[_tenseal.TsVector], columns: npt.NDArray[np.float64], slots: int
) -> _tenseal.TsVector:
    """Σ_j enc(w_j in every slot) · pad(columns[:, j]) — one plaintext multiplication deep;
    the zero padding masks every slot beyond ``len(columns)``."""
    acc: _tenseal.TsVector | None = None
    for j, w in enumerate(weights):
        term = w.mul_plain(_padded(columns[:, j], slots))
        acc = term if acc is None else acc.add(term)
    assert acc is not None  # noqa: S101 - at least one column, checked in _check
    return acc


def run_program(
    name: str,
    ctx: PublicContext,
    inputs: Sequence[bytes],
    table: npt.NDArray[np.float64],
    columns: Sequence[str],
    policy: HomomorphicPolicy,
    *,
    max_ciphertext_bytes: int | None = None,
) -> list[bytes]:
    """Run catalog program ``name`` on the consumer's encrypted ``inputs`` and the provider's
    ``table`` (rows × ``columns``); return the serialized result ciphertexts."""
    program = CATALOG.get(name)
    if program is None:
        raise _refuse(RefusalReason.PROGRAM_NOT_ALLOWED, f"unknown program {name!r}")
    table = np.asarray(table, dtype=np.float64)
    _check(program, ctx, table, columns, policy)
    n_rows, n_cols = table.shape
    slots = ctx.params.slot_count
    want = expected_inputs(program, slots, n_rows, n_cols)
    if len(inputs) != want:
        raise _refuse(RefusalReason.WRONG_SIZE, f"{len(inputs)} input ciphertexts, expected {want}")
    limit = max_ciphertext_bytes or ciphertext_byte_limit(ctx.params)
    vecs = [load_ciphertext(ctx, d, max_bytes=limit, expected_size=slots) for d in inputs]
    try:
        out = _evaluate(program, ctx, vecs, table, policy)
    except (ValueError, RuntimeError, TypeError) as e:
        raise _refuse(RefusalReason.EVALUATION_FAILED, str(e)) from None
    return [v.serialize() for v in out]


def _evaluate(
    program: Program,
    ctx: PublicContext,
    vecs: list[_tenseal.TsVector],
    table: npt.NDArray[np.float64],
    policy: HomomorphicPolicy,
) -> list[_tenseal.TsVector]:
    n_rows, n_cols = table.shape
    slots = ctx.params.slot_count
    name = program.name
    if name in ("column_sums", "column_means"):
        agg = table.sum(axis=0) if name == "column_sums" else table.mean(axis=0)
        agg = agg + _noise(policy, n_cols)
        # a fresh encryption of a zero-padded vector: no slot carries anything else
        return [_tenseal.encrypt(ctx.ts, Scheme.CKKS, _padded(agg, slots))]
    if name == "weighted_sum":
        # Σ_rows X·w = w · colsum(X); each colsum_j multiplies a mask with one non-zero slot
        colsum = table.sum(axis=0).reshape(1, n_cols)
        result = _broadcast_dot(vecs, colsum, slots)
        noise = _noise(policy, 1)
        if noise[0]:
            result = result.add_plain(_padded(noise, slots))
        return [result]
    if name in ("linear_scores", "logistic_scores"):
        out = []
        for start in range(0, n_rows, slots):
            chunk = table[start : start + slots]
            scores = _broadcast_dot(vecs, chunk, slots)
            if name == "logistic_scores":
                c0, c1, c2, c3 = SIGMOID_DEG3
                # no constant term in the encrypted polynomial, so masked slots stay zero;
                # c0 is added only to the released slots
                scores = scores.polyval([0.0, c1, c2, c3]).add_plain(
                    _padded(np.full(len(chunk), c0), slots)
                )
            out.append(scores)
        return out
    if name == "exact_count_sum":
        return _exact_count_sum(ctx, vecs, table[:, 0], slots)
    raise _refuse(RefusalReason.PROGRAM_NOT_ALLOWED, f"program {name!r} not implemented")


def _exact_count_sum(
    ctx: PublicContext,
    selections: list[_tenseal.TsVector],
    values: npt.NDArray[np.float64],
    slots: int,
) -> list[_tenseal.TsVector]:
    t = ctx.params.plain_modulus
    assert t is not None  # noqa: S101 - BFV params always carry t
    ints = values.astype(np.int64)
    # results must stay below t/2 whatever the selection is (signed decoding)
    bound = max(int(np.abs(ints).sum()), len(ints))
    if bound >= t // 2:
        raise _refuse(RefusalReason.OVERFLOW, f"sum bound {bound} >= t/2 = {t // 2}")
    count: _tenseal.TsVector | None = None
    total: _tenseal.TsVector | None = None
    for i, sel in enumerate(selections):
        chunk = ints[i * slots : (i + 1) * slots]
        padded = np.zeros(slots, dtype=np.int64)
        padded[: len(chunk)] = chunk
        s = sel.mul_plain(padded.tolist())  # Python ints
        # the count needs no multiplication: the consumer owns the selection, so 1s it puts
        # past the table only change its own count
        count = sel if count is None else count.add(sel)
        total = s if total is None else total.add(s)
    assert count is not None and total is not None  # noqa: S101 - n_rows >= 1
    # Rotate-and-sum on the provider side: afterwards every slot of the batching row holds the
    # full total and the other row holds 0, so no partial totals or single values remain. A
    # further e_0 mask multiplication would exceed the noise budget of BFV 4096 (t ~ 2^20) for
    # the sum; the count (one multiplication fewer) is masked to slot 0.
    return [count.sum().mul_plain([1]), total.sum()]
