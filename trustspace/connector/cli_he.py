"""`trustspace he`: homomorphic jobs as the consumer. The context and its secret key are made
here, on the consumer's side, and kept in the node's home (`he/`, readable by its owner only);
the provider gets the public context and the encrypted inputs, and computes without seeing
either the inputs or the result."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import typer

from .cli_jobs import wait_for_job
from .cli_node import Home, NodeCommandError, call, show

he_app = typer.Typer(help="Homomorphic jobs: the provider computes on your encrypted inputs.",
                     no_args_is_help=True)


def _vector(path: Path) -> npt.NDArray[np.float64]:
    """A vector from .npy, .json (a list) or text (numbers split by commas or whitespace)."""
    try:
        if path.suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64).ravel()
        text = path.read_text()
        if path.suffix == ".json":
            return np.asarray(json.loads(text), dtype=np.float64).ravel()
        return np.asarray([float(v) for v in text.replace(",", " ").split()], dtype=np.float64)
    except (OSError, ValueError, TypeError) as exc:
        raise NodeCommandError(f"cannot read a vector from {path}: {exc}", 2) from None


def _context_file(home: Path, pid: str) -> Path:
    return home / "he" / (pid.replace(":", "_") + ".ctx")


def _keep_context(home: Path, pid: str, program: str, secret: bytes) -> None:
    folder = home / "he"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = _context_file(home, pid)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(program.encode() + b"\n" + secret)


def decrypt(home: Path, pid: str) -> dict[str, Any]:
    """A completed homomorphic job's result, decrypted with the context kept for it."""
    from trustspace.homomorphic import decrypt_result, import_private
    from trustspace.homomorphic.errors import HomomorphicRefused
    from trustspace.homomorphic.payload import unpack

    try:
        program, _, secret = _context_file(home, pid).read_bytes().partition(b"\n")
    except OSError:
        raise NodeCommandError(f"no context kept for job {pid} in {home / 'he'}: only the "
                               "node that sent the job can decrypt its result", 2) from None
    shown = call(home, "GET", f"/api/jobs/{pid}/result")
    if "encrypted" not in shown:
        raise NodeCommandError(f"job {pid} is not a homomorphic job", 2)
    try:
        header_bytes, *ciphertexts = unpack(base64.b64decode(shown["encrypted"]),
                                            max_blobs=100_000, max_blob_bytes=1 << 28)
        header = json.loads(header_bytes)
        ctx = import_private(program.decode(), secret)
        values = decrypt_result(ctx, ciphertexts, n_values=int(header["values"]))
    except (HomomorphicRefused, ValueError, KeyError) as exc:
        raise NodeCommandError(f"cannot decrypt the result of {pid}: {exc}", 1) from None
    return {"pid": pid, "program": header["program"], "rows": header["rows"],
            "resultDigest": shown["resultDigest"], "values": values.tolist()}


def _emit(result: dict[str, Any], output: Path | None) -> None:
    if output is None:
        show(result)
        return
    if output.suffix == ".npy":
        np.save(output, np.asarray(result["values"], dtype=np.float64), allow_pickle=False)
    else:
        output.write_text(json.dumps(result, indent=1))
    typer.echo(f"saved {len(result['values'])} value(s) to {output}", err=True)


@he_app.command("run")
def he_run(
    home: Home,
    agreement: Annotated[str, typer.Argument(help="The agreement id.")],
    program: Annotated[str, typer.Argument(help="A catalog program (`trustspace he programs`).")],
    columns: Annotated[str, typer.Option(help="The provider's columns, comma-separated.")],
    input: Annotated[Path | None, typer.Option(  # noqa: A002 - the option's name
        "--input", help="Weights (one per column): .npy, .json or text.")] = None,
    selection: Annotated[Path | None, typer.Option(
        help="A 0/1 row selection (exact_count_sum): .npy, .json or text.")] = None,
    purpose: Annotated[str | None, typer.Option(help="The purpose of this use.")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Save the decrypted values (.npy) or the whole result (.json).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 600,
) -> None:
    """Encrypt, send, wait, decrypt: run a catalog program on a provider's data under an
    agreement, with your inputs and the result encrypted end to end."""
    from trustspace.homomorphic import CATALOG, encrypt_inputs, export_private, new_context
    from trustspace.homomorphic.payload import pack
    from trustspace.sandbox.he_jobs import parameters

    if program not in CATALOG:
        raise NodeCommandError(f"unknown program {program!r} (known: "
                               f"{', '.join(sorted(CATALOG))})", 2)
    names = [c.strip() for c in columns.split(",") if c.strip()]
    weights = _vector(input) if input else None
    chosen = _vector(selection) if selection else None
    if weights is not None and len(weights) != len(names):
        raise NodeCommandError(f"{len(weights)} weights for {len(names)} columns", 2)
    private, public = new_context(program)
    try:
        inputs = encrypt_inputs(private, weights=weights, selection=chosen)
    except ValueError as exc:
        raise NodeCommandError(str(exc), 2) from None
    blobs = [public, *inputs]
    body = {"agreement": agreement, "code": base64.b64encode(pack(blobs)).decode(),
            "parameters": parameters(program, names, blobs), "purpose": purpose,
            "mode": "homomorphic"}
    shown = call(home, "POST", "/api/jobs", body)
    pid = shown["pid"]
    _keep_context(home, pid, program, export_private(private))
    typer.echo(f"job {pid}: {shown['state']}", err=True)
    wait_for_job(home, shown, timeout)
    _emit(decrypt(home, pid), output)


@he_app.command("result")
def he_result(home: Home, pid: str, output: Annotated[Path | None, typer.Option(
        help="Save the decrypted values (.npy) or the whole result (.json).")] = None) -> None:
    """Decrypt the result of a completed homomorphic job sent from this node."""
    _emit(decrypt(home, pid), output)


@he_app.command("programs")
def he_programs() -> None:
    """The catalog: what each program computes and needs."""
    from trustspace.homomorphic import CATALOG

    show({name: {"scheme": p.scheme.value, "inputs": p.inputs.value,
                 "columns": p.columns.value, "perRow": p.per_row,
                 "galoisKeys": p.needs_galois} for name, p in CATALOG.items()})
