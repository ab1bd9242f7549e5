"""Consumer-side helpers: make a context for a program, encrypt inputs, decrypt results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import _tenseal
from .params import ContextParams, Scheme
from .programs import CATALOG, Inputs, Program


@dataclass(frozen=True)
class PrivateContext:
    """The consumer's context with its secret key; never leaves the consumer's node."""

    program: Program
    params: ContextParams
    ts: _tenseal.TsContext


def new_context(program: str | Program) -> tuple[PrivateContext, bytes]:
    """A fresh context for ``program``: (private context, public context bytes to send).

    Galois keys (35 MB at N=8192 CKKS, 6.5 MB at 4096 BFV) are created and sent only for
    programs that rotate; relinearization keys only for programs that multiply ciphertexts."""
    prog = CATALOG[program] if isinstance(program, str) else program
    if prog.scheme is Scheme.CKKS:
        ctx = _tenseal.new_ckks(
            prog.poly_modulus_degree, prog.coeff_modulus_bits, prog.scale_bits,
            galois=prog.needs_galois,
        )
    else:
        assert prog.plain_modulus is not None  # noqa: S101 - BFV catalog entries carry t
        ctx = _tenseal.new_bfv(prog.poly_modulus_degree, prog.plain_modulus,
                               galois=prog.needs_galois)
    public = ctx.serialize(
        secret_key=False, galois_keys=prog.needs_galois, relin_keys=prog.needs_relin
    )
    params, _ = _tenseal.peek_context(public)
    return PrivateContext(prog, params, ctx), public


def export_private(ctx: PrivateContext) -> bytes:
    """The context with its secret key, for the consumer's own disk (`import_private`)."""
    return ctx.ts.serialize(secret_key=True, galois_keys=False, relin_keys=False)


def import_private(program: str, data: bytes) -> PrivateContext:
    params, has_secret = _tenseal.peek_context(data)
    if not has_secret:
        raise ValueError("this context has no secret key: it cannot decrypt")
    return PrivateContext(CATALOG[program], params, _tenseal.context_from(data))


def encrypt_inputs(
    ctx: PrivateContext,
    *,
    weights: npt.ArrayLike | None = None,
    selection: npt.ArrayLike | None = None,
) -> list[bytes]:
    """Encrypt the program's inputs: ``weights`` (one per column) as broadcast ciphertexts,
    or a 0/1 ``selection`` over the provider's rows in chunks of ``slot_count``."""
    slots = ctx.params.slot_count
    kind = ctx.program.inputs
    if kind is Inputs.NONE:
        return []
    if kind is Inputs.BROADCAST_WEIGHTS:
        if weights is None:
            raise ValueError(f"{ctx.program.name} needs weights")
        w = np.asarray(weights, dtype=np.float64).ravel()
        return [
            _tenseal.encrypt(ctx.ts, Scheme.CKKS, [float(wj)] * slots).serialize() for wj in w
        ]
    if selection is None:
        raise ValueError(f"{ctx.program.name} needs a selection")
    sel = np.asarray(selection).astype(np.int64).ravel()
    if not np.isin(sel, (0, 1)).all():
        raise ValueError("selection must be 0/1")
    out = []
    for i in range(math.ceil(len(sel) / slots)):
        chunk = np.zeros(slots, dtype=np.int64)
        part = sel[i * slots : (i + 1) * slots]
        chunk[: len(part)] = part
        out.append(_tenseal.encrypt(ctx.ts, Scheme.BFV, [int(x) for x in chunk]).serialize())
    return out


def decrypt_result(
    ctx: PrivateContext, results: Sequence[bytes], *, n_values: int
) -> npt.NDArray[np.float64]:
    """Decrypt a program's results and keep the ``n_values`` released values (number of
    columns for column programs, number of rows for per-row programs, 1 for weighted_sum,
    2 — count and sum — for exact_count_sum)."""
    scheme = ctx.params.scheme
    values: list[float] = []
    for data in results:
        values.extend(_tenseal.vector_from(ctx.ts, scheme, data).decrypt())
    name = ctx.program.name
    if name in ("linear_scores", "logistic_scores"):
        slots = ctx.params.slot_count
        rows = [values[i * slots : (i + 1) * slots] for i in range(len(results))]
        flat = [v for chunk in rows for v in chunk]
        return np.asarray(flat[:n_values], dtype=np.float64)
    return np.asarray(values[:n_values], dtype=np.float64)
