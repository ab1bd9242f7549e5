"""The provider's evaluator, run inside the job sandbox (bubblewrap, seccomp, no network, memory
and CPU limits) as the "code" of a homomorphic job: the node's own program, never the consumer's.

Why a sandbox for our own code: TenSEAL parses the consumer's context and ciphertexts in C++,
and a parser bug should cost a killed sandbox, not the provider's node. The worker copies this
file as main.py beside a copy of the `homomorphic` package, mounts the allowed columns of the
product as ``/data/table.npy`` (nothing else of the table) and the consumer's frame as
``/data/request.bin``, and reads back one file output: ``result`` (a frame: header JSON, then
the result ciphertexts) or ``refusal`` (JSON: reason, detail).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Inside the sandbox the package sits beside this file as `homomorphic`; mypy sees it in place.
if TYPE_CHECKING:
    from trustspace.homomorphic import (
        CATALOG,
        HomomorphicPolicy,
        HomomorphicRefused,
        RefusalReason,
        load_public_context,
        run_program,
    )
    from trustspace.homomorphic.payload import pack, unpack
else:
    from homomorphic import (
        CATALOG,
        HomomorphicPolicy,
        HomomorphicRefused,
        RefusalReason,
        load_public_context,
        run_program,
    )
    from homomorphic.payload import pack, unpack

from trustspace.sandbox import api  # noqa: E402 - /job/lib inside the sandbox


def released_values(program: str, rows: int, columns: int) -> int:
    """How many values the consumer keeps from the decrypted result."""
    if program in ("column_sums", "column_means"):
        return columns
    if program in ("linear_scores", "logistic_scores"):
        return rows
    return {"weighted_sum": 1, "exact_count_sum": 2}.get(program, 0)


def evaluate(p: dict[str, Any]) -> bytes:
    program = str(p["program"])
    columns = [str(c) for c in p["columns"]]
    blobs = unpack(api.path("request").read_bytes(), max_blobs=int(p["maxBlobs"]),
                   max_blob_bytes=int(p["maxContextBytes"]))
    if not blobs:
        raise HomomorphicRefused(RefusalReason.MALFORMED, "no public context")
    ctx = load_public_context(blobs[0], max_bytes=int(p["maxContextBytes"]))
    table = np.asarray(np.load(api.path("table"), allow_pickle=False), dtype=np.float64)
    policy = HomomorphicPolicy(programs=frozenset(p["policy"]["programs"]),
                               columns=frozenset(p["policy"]["columns"]),
                               per_row_allowed=bool(p["policy"]["perRow"]),
                               min_rows=int(p["policy"]["minRows"]),
                               aggregate_noise_std=float(p["policy"]["noiseStd"]))
    results = run_program(program, ctx, blobs[1:], table, columns, policy,
                          max_ciphertext_bytes=int(p["maxCiphertextBytes"]))
    rows = int(table.shape[0])
    header = {"program": program, "scheme": CATALOG[program].scheme.value, "rows": rows,
              "values": released_values(program, rows, len(columns)),
              "slots": ctx.params.slot_count}
    return pack([json.dumps(header, sort_keys=True).encode(), *results])


def main() -> None:
    try:
        api.file("result", evaluate(api.params()))
    except HomomorphicRefused as exc:
        api.file("refusal", json.dumps({"reason": exc.reason.value,
                                        "detail": exc.detail}).encode())


if __name__ == "__main__":
    main()
