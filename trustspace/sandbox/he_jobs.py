"""Homomorphic jobs: a job of mode ``homomorphic`` whose "code" is the consumer's frame (its
public TenSEAL context and encrypted inputs, `trustspace.homomorphic.payload`) and whose
parameters name a catalog program and the columns it reads.

What the provider checks, and where:
- at the request (`precheck`, no TenSEAL): the frame's layout and sizes, that the parameters'
  digests are those of the blobs, that the operator enabled the program and the columns for the
  product (`ProductSpec.homomorphic`), and per-row access: each refusal is a refusal receipt;
- in the sandbox (`run`): the node's own evaluator (`homomorphic/_evaluate.py`) parses the
  context and ciphertexts (secret key, 128-bit parameters, sizes) and runs the program with its
  leak guards, seeing only the allowed columns.

The policy (`he_policy`): the agreement's ``ts:minAggregation`` k, or 10 by default, is the
fewest rows a program runs on; an agreement with a k releases aggregates only, one without it
allows per-row results where the product enables them.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trustspace.homomorphic import payload
from trustspace.homomorphic.errors import HomomorphicRefused, RefusalReason
from trustspace.registry.products import HomomorphicOffer, ProductSpec

from .errors import JobInvalid, ResultsInvalid
from .jobs import RunReport
from .release import DEFAULT_MIN_COUNT
from .results import File, read_results
from .runner import Limits, Sandbox, SandboxJob

MAX_REQUEST_BYTES = 64 * 1024 * 1024  # the whole frame: context and every input ciphertext
MAX_CONTEXT_BYTES = 48 * 1024 * 1024  # BFV 4096 with Galois keys is 6.5 MB; CKKS 8192 ~1.4 MB
MAX_CIPHERTEXT_BYTES = 2 * 1024 * 1024  # one uncompressed CKKS 8192 ciphertext is ~0.5 MB
MAX_BLOBS = 1 + 1024
MAX_RESULT_BYTES = 96 * 1024 * 1024
_PACKAGE = Path(__file__).resolve().parent.parent / "homomorphic"
# Programs that release one value per row, or take a row selection (which can isolate a row).
PER_ROW_PROGRAMS = frozenset({"linear_scores", "logistic_scores", "exact_count_sum"})


def refusal_code(reason: RefusalReason | str) -> str:
    """The transfer's termination code for a homomorphic refusal: ``he-`` + the reason."""
    value = reason.value if isinstance(reason, RefusalReason) else reason
    return "he-" + value.replace("_", "-")


@dataclass(frozen=True)
class HeRequest:
    program: str
    columns: tuple[str, ...]
    blobs: list[bytes]  # [public context, *inputs]


def parameters(program: str, columns: Sequence[str], blobs: Sequence[bytes]) -> dict[str, Any]:
    """The job parameters a consumer sends with its frame; signed (by digest) in its job
    request, and carried into the delivery receipt."""
    return {"program": program, "columns": list(columns),
            "contextDigest": payload.digest(blobs[0]),
            "inputDigests": [payload.digest(b) for b in blobs[1:]]}


def he_policy(offer: HomomorphicOffer, decision: Mapping[str, Any]) -> dict[str, Any]:
    k = decision.get("minAggregation")
    return {"programs": list(offer.programs), "columns": list(offer.columns),
            "perRow": bool(offer.per_row and k is None),
            "minRows": max(int(k or DEFAULT_MIN_COUNT), 1), "noiseStd": offer.noise_std}


def precheck(code: bytes, params: Mapping[str, Any], spec: ProductSpec,
             decision: Mapping[str, Any]) -> HeRequest:
    """Everything that needs no TenSEAL; raises HomomorphicRefused."""
    if len(code) > MAX_REQUEST_BYTES:
        raise HomomorphicRefused(RefusalReason.TOO_LARGE,
                                 f"the request is {len(code)} bytes, limit {MAX_REQUEST_BYTES}")
    program, columns = params.get("program"), params.get("columns")
    if not isinstance(program, str) or not isinstance(columns, list) or not columns or \
            not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise HomomorphicRefused(RefusalReason.MALFORMED, "parameters need a program and a "
                                 "non-empty list of distinct column names")
    blobs = payload.unpack(code, max_blobs=MAX_BLOBS, max_blob_bytes=MAX_CONTEXT_BYTES)
    if not blobs:
        raise HomomorphicRefused(RefusalReason.MALFORMED, "the frame holds no public context")
    if params.get("contextDigest") != payload.digest(blobs[0]) or \
            params.get("inputDigests") != [payload.digest(b) for b in blobs[1:]]:
        raise HomomorphicRefused(RefusalReason.MALFORMED,
                                 "contextDigest/inputDigests are not those of the frame")
    for i, blob in enumerate(blobs[1:]):
        if len(blob) > MAX_CIPHERTEXT_BYTES:
            raise HomomorphicRefused(RefusalReason.TOO_LARGE, f"input {i} is {len(blob)} bytes, "
                                     f"limit {MAX_CIPHERTEXT_BYTES}")
    offer = spec.homomorphic
    if offer is None:
        raise HomomorphicRefused(RefusalReason.PROGRAM_NOT_ALLOWED,
                                 f"the operator enabled no homomorphic program for {spec.id}")
    policy = he_policy(offer, decision)
    if program not in policy["programs"]:
        raise HomomorphicRefused(RefusalReason.PROGRAM_NOT_ALLOWED,
                                 f"program {program!r} is not enabled for {spec.id} "
                                 f"(enabled: {', '.join(policy['programs'])})")
    denied = [c for c in columns if c not in policy["columns"]]
    if denied:
        raise HomomorphicRefused(RefusalReason.COLUMN_NOT_ALLOWED, f"columns {denied}")
    if program in PER_ROW_PROGRAMS and not policy["perRow"]:
        raise HomomorphicRefused(RefusalReason.PER_ROW_NOT_ALLOWED,
                                 f"{program} releases per-row values; this agreement releases "
                                 f"aggregates over at least {policy['minRows']} rows only")
    return HeRequest(program, tuple(columns), blobs)


def read_columns(data: Path, columns: Sequence[str]) -> npt.NDArray[np.float64]:
    """Only the named columns of the product's file, as floats (rows × columns)."""
    if data.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(data, columns=list(columns))
        values = [table.column(c).to_pylist() for c in columns]
    else:
        with data.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            index = [header.index(c) for c in columns]
            values = [[] for _ in columns]
            for row in reader:
                for out, i in zip(values, index, strict=True):
                    out.append(row[i] if i < len(row) else None)
    try:
        table_np = np.array([[float(v) for v in col] for col in values], dtype=np.float64).T
    except (TypeError, ValueError):
        raise HomomorphicRefused(RefusalReason.BAD_TABLE, "a column holds a missing or "
                                 "non-numeric value") from None
    if not np.all(np.isfinite(table_np)):
        raise HomomorphicRefused(RefusalReason.BAD_TABLE, "a column holds NaN or infinity")
    return table_np.reshape(-1, len(columns))


def _code_folder(folder: Path) -> None:
    """The evaluator as main.py beside a copy of the `homomorphic` package (its modules use
    only numpy, tenseal and each other, which the sandbox's site-packages provide)."""
    package = folder / "homomorphic"
    package.mkdir(parents=True)
    for module in _PACKAGE.glob("*.py"):
        shutil.copyfile(module, package / module.name)
    shutil.copyfile(_PACKAGE / "_evaluate.py", folder / "main.py")
    for path in (folder, package, *folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def run(sandbox: Sandbox, request: HeRequest, data: Path, spec: ProductSpec,
        decision: Mapping[str, Any], workdir: Path, limits: Limits, started: datetime
        ) -> RunReport:
    """Evaluate in the sandbox; the report's result is the frame the consumer decrypts."""
    offer = spec.homomorphic
    assert offer is not None  # noqa: S101 - precheck refused it otherwise
    inputs = workdir / "he"
    inputs.mkdir(mode=0o755)
    table = read_columns(data, request.columns)
    np.save(inputs / "table.npy", table, allow_pickle=False)
    (inputs / "request.bin").write_bytes(payload.pack(request.blobs))
    for path in inputs.iterdir():
        path.chmod(0o644)
    _code_folder(workdir / "code")
    policy = he_policy(offer, decision)
    params = {"program": request.program, "columns": list(request.columns),
              "policy": policy, "maxBlobs": MAX_BLOBS,
              "maxContextBytes": MAX_CONTEXT_BYTES, "maxCiphertextBytes": MAX_CIPHERTEXT_BYTES}
    job = SandboxJob(workdir / "code", "main.py", {"table": inputs / "table.npy",
                                                    "request": inputs / "request.bin"},
                     params, _he_limits(limits))
    size = int(table.nbytes)
    try:
        ran = sandbox.run(job, workdir / "run")
    except JobInvalid as exc:
        return RunReport(outcome="failed", code="sandbox-error", detail=str(exc),
                         started_at=started, input_bytes=size)
    log = (ran.stdout + b"\n--- stderr ---\n" + ran.stderr).decode(errors="replace")
    if not ran.ok:
        return RunReport(outcome="failed", code=f"he-{ran.outcome.value}", detail=ran.reason,
                         log=log, started_at=started, input_bytes=size)
    try:
        results = read_results(ran.out_dir, max_bytes=MAX_RESULT_BYTES)
        output = results[results.names[0]] if len(results.names) == 1 else None
    except ResultsInvalid as exc:
        output, log = None, f"{log}\n{exc}"
    if not isinstance(output, File) or output.name not in ("result", "refusal"):
        return RunReport(outcome="failed", code="he-evaluator-failed",
                         detail="the evaluator wrote no result", log=log, started_at=started,
                         input_bytes=size)
    written = output.path.read_bytes()
    checks = (f"homomorphic program {request.program} on {len(request.columns)} column(s)",
              f"at least {policy['minRows']} rows",
              "per-row values allowed" if policy["perRow"] else "aggregates only")
    if output.name == "refusal":
        refused = json.loads(written)
        return RunReport(outcome="refused", code=refusal_code(str(refused["reason"])),
                         detail=str(refused["detail"]), log=log, started_at=started,
                         input_bytes=size, rows=len(table))
    return RunReport(outcome="succeeded", result=written, checks=checks, log=log,
                     started_at=started, input_bytes=size, rows=len(table))


def _he_limits(limits: Limits) -> Limits:
    """The job limits, with room for the frame in /work and the result file."""
    room = max(limits.work_bytes, MAX_RESULT_BYTES + 16 * 1024 * 1024)
    return Limits(cpu_seconds=limits.cpu_seconds, wall_seconds=limits.wall_seconds,
                  memory_bytes=limits.memory_bytes, processes=max(limits.processes, 64),
                  open_files=limits.open_files, file_size_bytes=max(
                      limits.file_size_bytes, MAX_RESULT_BYTES), work_bytes=room,
                  stdout_bytes=limits.stdout_bytes)

