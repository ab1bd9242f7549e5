"""Benchmark trustspace's SM2/SM3/SM4 against `openssl speed`, gmssl and gmssl_pyx on one core.

Run from the repository root::

    .venv/bin/python bench/crypto.py            # a few seconds per figure, about 2 minutes
    .venv/bin/python bench/crypto.py --quick    # smoke test, well under 20 seconds
    .venv/bin/python bench/crypto.py --json results.json
    .venv/bin/python bench/crypto.py --quick --sizes 64,1024,8192   # other SM3/SM4 sizes

Every Python figure is a loop over one call for a fixed duration of this process's CPU time
(garbage collector off, as `timeit` does); ours and gmssl_pyx take the best of several
repetitions, the slow pure-Python gmssl one. OpenSSL runs as `openssl speed -mr` in a
subprocess, which also divides by its CPU (user) time: figures on both sides stay fair when
something else briefly shares the CPU, and the report warns when that happened. This process
and the subprocess are pinned to the same single CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.hazmat.backends.openssl.backend import backend as _crypto_backend

from trustspace.crypto import SM2PrivateKey, _libcrypto, sm3, sm3_file, sm4
from trustspace.crypto.sm2 import N

TARGET = 0.9  # ours must reach this fraction of OpenSSL on the rows marked as targets
MSG_LEN = 32  # SM2 message size (openssl speed signs 20: one SM3 block less, ~0.1% of a sign)
KIB = 1024
MIB = 1024 * KIB
CLOCK_CHECK = 0.005  # seconds of work between two reads of the clock
BUSY = 0.9  # below this share of the wall clock, something else ran on our CPU
GMSSL_MAX_SIZE = 16 * KIB  # pure-Python gmssl runs at ~0.3 MB/s: larger buffers are skipped

Op = Callable[[], object]


@dataclass(frozen=True)
class Settings:
    duration: float  # seconds per repetition of one Python measurement
    repeats: int  # best of this many repetitions (ours and gmssl_pyx)
    openssl_seconds: int  # `openssl speed -seconds` (a whole number, at least 1)
    openssl_repeats: int  # best of this many `openssl speed` runs
    sizes: tuple[int, ...]  # SM3/SM4 buffer sizes (openssl speed -bytes)
    file_size: int  # file hashed by sm3_file


# Both sides get the same budget per figure: best of 3 x 1 s.
DEFAULT = Settings(duration=1.0, repeats=3, openssl_seconds=1, openssl_repeats=3,
                   sizes=(8 * KIB, 16 * KIB, MIB), file_size=32 * MIB)
QUICK = Settings(duration=0.1, repeats=3, openssl_seconds=1, openssl_repeats=1,
                 sizes=(8 * KIB, MIB), file_size=8 * MIB)


@dataclass
class Row:
    name: str
    size: int  # bytes per call
    unit: str  # "ops/s" or "MB/s" (MB = 10^6 bytes, as openssl speed counts)
    target: bool  # ours must reach TARGET x OpenSSL
    ours: float | None = None
    openssl: float | None = None
    gmssl: float | None = None
    gmssl_pyx: float | None = None
    # What the other implementations ran when it is not the same operation as ours.
    openssl_alg: str = ""
    gmssl_alg: str = ""
    notes: list[str] = field(default_factory=list)

    def ratio(self, other: float | None) -> float | None:
        if self.ours is None or not other:
            return None
        return self.ours / other

    @property
    def verdict(self) -> str:
        r = self.ratio(self.openssl)
        if not self.target or r is None:
            return ""
        return "PASS" if r >= TARGET else "BELOW"


# ---- timing ------------------------------------------------------------------------------------

def per_second(op: Op, duration: float) -> tuple[float, float]:
    """Calls of `op` per CPU second, calling it in a loop for `duration` CPU seconds; and the
    share of the wall clock this process got meanwhile (1.0 when it had its CPU to itself)."""
    start = time.process_time()
    op()  # warm-up, and an estimate of one call's cost
    first = time.process_time() - start
    batch = max(1, int(CLOCK_CHECK / max(first, 1e-9)))
    count = 0
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        wall = time.perf_counter()
        start = time.process_time()
        deadline = start + duration
        while True:
            for _ in range(batch):
                op()
            count += batch
            now = time.process_time()
            if now >= deadline:
                break
        wall = time.perf_counter() - wall
    finally:
        if gc_enabled:
            gc.enable()
    return count / (now - start), min(1.0, (now - start) / wall)


def best_of(op: Op, duration: float, repeats: int) -> tuple[float, float]:
    """The best rate of `repeats` runs, and the lowest wall-clock share among them."""
    best, share = 0.0, 1.0
    for _ in range(repeats):
        rate, run_share = per_second(op, duration)
        best, share = max(best, rate), min(share, run_share)
        gc.collect()
    return best, share


# ---- openssl speed -----------------------------------------------------------------------------

_SM2_RE = re.compile(r"^\+F\d*:\d+:\d+:[^:]*SM2[^:]*:([0-9.]+):([0-9.]+)\s*$", re.MULTILINE)
_CIPHER_RE = re.compile(r"^\+F:\d+:[^:]+:([0-9.:]+)\s*$", re.MULTILINE)


class OpenSSL:
    """`openssl speed` in machine-readable mode, pinned to one CPU; its figures are per second
    of its user CPU time (openssl speed's default)."""

    def __init__(self, binary: str, cpu: int | None, seconds: int, repeats: int) -> None:
        self.path = shutil.which(binary)
        self.prefix: list[str] = []
        if cpu is not None and shutil.which("taskset"):
            self.prefix = ["taskset", "-c", str(cpu)]
        self.seconds = seconds
        self.repeats = repeats
        self._cache: dict[tuple[str, ...], float] = {}

    def _run(self, *args: str, timeout: float = 600) -> str:
        if self.path is None:
            raise RuntimeError("openssl not found")
        proc = subprocess.run([*self.prefix, self.path, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"openssl {' '.join(args)}: {last}")
        return proc.stdout + proc.stderr

    def version(self) -> str:
        return self._run("version").strip() if self.path else "not found"

    def short_version(self) -> str:
        return " ".join(self.version().split()[:2])

    def has_cipher(self, name: str) -> bool:
        try:
            return name.upper() in self._run("list", "-cipher-algorithms").upper()
        except (RuntimeError, subprocess.SubprocessError):
            return False

    def _speed(self, *args: str) -> str:
        return self._run("speed", "-mr", "-seconds", str(self.seconds), *args)

    def sm2(self) -> tuple[float, float]:
        """Best (sign/s, verify/s): EVP_DigestSign/Verify with Z and SM3 of a 20-byte message."""
        sign = verify = 0.0
        for _ in range(self.repeats):
            match = _SM2_RE.search(self._speed("sm2"))
            if match is None:
                raise RuntimeError("cannot parse `openssl speed sm2` output")
            sign, verify = max(sign, float(match.group(1))), max(verify, float(match.group(2)))
        return sign, verify

    def evp_mb_per_s(self, size: int, *alg: str) -> float:
        """Best MB/s of `openssl speed <alg> -bytes <size>`; each configuration runs once."""
        key = (*alg, str(size))
        if key not in self._cache:
            best = 0.0
            for _ in range(self.repeats):
                match = _CIPHER_RE.search(self._speed(*alg, "-bytes", str(size)))
                if match is None:
                    raise RuntimeError(f"cannot parse `openssl speed {' '.join(alg)}` output")
                best = max(best, float(match.group(1).split(":")[-1]) / 1e6)  # bytes/s
            self._cache[key] = best
        return self._cache[key]


# ---- the implementations -----------------------------------------------------------------------

def _optional(name: str, *submodules: str) -> ModuleType | None:
    """The package `name` with its `submodules` imported, or None if it is not installed."""
    try:
        for sub in submodules:
            importlib.import_module(f"{name}.{sub}")
        return importlib.import_module(name)
    except ImportError:
        return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _check(ok: object, what: str) -> None:
    if not ok:
        raise SystemExit(f"sanity check failed: {what}")


def _gmssl_sm3(sm3_hash: Callable[[list[int]], str], data: bytes) -> str:
    """gmssl's sm3_hash takes a list of ints (and appends its padding to it): a fresh one."""
    return sm3_hash(list(data))


def make_key() -> tuple[SM2PrivateKey, int]:
    """One SM2 key shared by all implementations (so their results can be cross-checked).

    gmssl's CryptSM2 `lstrip("04")`s its public-key hex, which mangles any key whose x
    coordinate starts with hex digit 0 or 4: pick a key where it does not.
    """
    while True:
        d = int.from_bytes(os.urandom(32), "big") % (N - 2) + 1
        key = SM2PrivateKey.from_private_value(d)
        if key.public_key.point[1:].hex()[0] not in "04":
            return key, d


class Bench:
    def __init__(self, settings: Settings, openssl: OpenSSL) -> None:
        self.s = settings
        self.openssl = openssl
        self.gmssl = _optional("gmssl", "sm2", "sm3", "sm4")
        self.pyx = _optional("gmssl_pyx")
        self.rows: list[Row] = []
        self.busy: list[str] = []  # measurements during which something else used our CPU
        self.sm4_key = os.urandom(16)
        self.nonce = os.urandom(sm4.GCM_NONCE_SIZE)  # reused: harmless for timing only
        self.counter = os.urandom(16)

    def best(self, row: Row, who: str, op: Op) -> float:
        """Ours and gmssl_pyx: best of `repeats` runs, in the row's unit."""
        return self._value(row, who, *best_of(op, self.s.duration, self.s.repeats))

    def once(self, row: Row, op: Op) -> float:
        """Pure-Python gmssl: one run; its figures give the scale, they are no target."""
        return self._value(row, "gmssl", *per_second(op, self.s.duration))

    def _value(self, row: Row, who: str, calls_per_s: float, share: float) -> float:
        if share < BUSY:
            self.busy.append(f"{who} {row.name} {_size(row.size)} {share:.0%}")
        return calls_per_s * row.size / 1e6 if row.unit == "MB/s" else calls_per_s

    def log(self, text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    # -- SM2 --

    def sm2(self) -> None:
        key, d = make_key()
        pub = key.public_key
        msg = os.urandom(MSG_LEN)
        sig = key.sign(msg)
        ct = pub.encrypt(msg)
        sign = Row("SM2 sign", MSG_LEN, "ops/s", target=True)
        verify = Row("SM2 verify", MSG_LEN, "ops/s", target=True)
        enc = Row("SM2 encrypt", MSG_LEN, "ops/s", target=False)
        dec = Row("SM2 decrypt", MSG_LEN, "ops/s", target=False)
        self.log("SM2: ours")
        sign.ours = self.best(sign, "ours", partial(key.sign, msg))
        verify.ours = self.best(verify, "ours", partial(pub.verify, sig, msg))
        enc.ours = self.best(enc, "ours", partial(pub.encrypt, msg))
        dec.ours = self.best(dec, "ours", partial(key.decrypt, ct))

        if self.pyx is not None:
            self.log("SM2: gmssl_pyx")
            gp, who = self.pyx, "gmssl_pyx"
            priv, point = d.to_bytes(32, "big"), pub.point[1:]
            psig, pct = gp.sm2_sign(priv, point, msg), gp.sm2_encrypt(point, msg)
            _check(gp.sm2_verify(point, msg, sig), "gmssl_pyx verifies our signature")
            pub.verify(psig, msg)
            _check(key.decrypt(pct) == msg and gp.sm2_decrypt(priv, ct) == msg,
                   "SM2 ciphertexts cross-decrypt")
            sign.gmssl_pyx = self.best(sign, who, partial(gp.sm2_sign, priv, point, msg))
            verify.gmssl_pyx = self.best(verify, who, partial(gp.sm2_verify, point, msg, psig))
            enc.gmssl_pyx = self.best(enc, who, partial(gp.sm2_encrypt, point, msg))
            dec.gmssl_pyx = self.best(dec, who, partial(gp.sm2_decrypt, priv, pct))

        if self.gmssl is not None:
            self.log("SM2: gmssl (pure Python)")
            cs = self.gmssl.sm2.CryptSM2(private_key=f"{d:064x}",
                                         public_key=pub.point.hex(), mode=1)
            gsig, gct = cs.sign_with_sm3(msg), cs.encrypt(msg)
            _check(cs.verify_with_sm3(gsig, msg) and cs.decrypt(gct) == msg,
                   "gmssl SM2 round trip")
            sign.gmssl = self.once(sign, partial(cs.sign_with_sm3, msg))
            verify.gmssl = self.once(verify, partial(cs.verify_with_sm3, gsig, msg))
            enc.gmssl = self.once(enc, partial(cs.encrypt, msg))
            dec.gmssl = self.once(dec, partial(cs.decrypt, gct))

        self.log("SM2: openssl speed sm2")
        try:
            sign.openssl, verify.openssl = self.openssl.sm2()
            sign.openssl_alg = verify.openssl_alg = "20-byte message"
        except (RuntimeError, subprocess.SubprocessError) as exc:
            sign.notes.append(str(exc))
        self.rows += [sign, verify, enc, dec]

    # -- SM3 --

    def sm3(self) -> None:
        for size in self.s.sizes:
            buf = os.urandom(size)
            row = Row("SM3", size, "MB/s", target=True)
            self.log(f"SM3 {size} B")
            row.ours = self.best(row, "ours", partial(sm3, buf))
            if self.pyx is not None:
                _check(self.pyx.sm3_hash(buf) == sm3(buf), "gmssl_pyx SM3 agrees")
                row.gmssl_pyx = self.best(row, "gmssl_pyx", partial(self.pyx.sm3_hash, buf))
            if self.gmssl is not None:
                if size <= GMSSL_MAX_SIZE:
                    op = partial(_gmssl_sm3, self.gmssl.sm3.sm3_hash, buf)
                    _check(op() == sm3(buf).hex(), "gmssl SM3 agrees")
                    row.gmssl = self.once(row, op)
                else:
                    row.gmssl_alg = "skipped (seconds per call)"
            self._openssl_evp(row, "sm3", "-evp", "sm3")
            self.rows.append(row)

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "blob"
            path.write_bytes(os.urandom(self.s.file_size))
            _check(sm3_file(path) == sm3(path.read_bytes()), "sm3_file agrees")
            self.log(f"SM3 sm3_file {self.s.file_size} B")
            row = Row("SM3 sm3_file (1 MiB reads)", self.s.file_size, "MB/s", target=False)
            row.ours = self.best(row, "ours", partial(sm3_file, path))
            self.rows.append(row)

    # -- SM4 --

    def sm4(self) -> None:
        gcm_available = self.openssl.path is not None and self.openssl.has_cipher("SM4-GCM")
        for size in self.s.sizes:
            buf = os.urandom(size)
            self.log(f"SM4-GCM encrypt {size} B")
            row = Row("SM4-GCM encrypt", size, "MB/s", target=True)
            row.ours = self.best(row, "ours",
                                 partial(sm4.gcm_encrypt, self.sm4_key, self.nonce, buf))
            if self.pyx is not None:
                ct, tag = self.pyx.sm4_gcm_encrypt(self.sm4_key, self.nonce, b"", buf)
                _check(ct + tag == sm4.gcm_encrypt(self.sm4_key, self.nonce, buf),
                       "gmssl_pyx SM4-GCM agrees")
                row.gmssl_pyx = self.best(row, "gmssl_pyx", partial(
                    self.pyx.sm4_gcm_encrypt, self.sm4_key, self.nonce, b"", buf))
            self._gmssl_cbc(row, buf)
            if gcm_available:
                self._openssl_evp(row, "sm4-gcm (-aead)", "-aead", "-evp", "sm4-gcm")
            else:
                row.openssl_alg = "SM4-CTR"
                self._openssl_evp(row, "sm4-ctr", "-evp", "sm4-ctr")
            self.rows.append(row)

        for size in self.s.sizes:
            buf = os.urandom(size)
            self.log(f"SM4-CTR {size} B")
            row = Row("SM4-CTR (ctr_crypt)", size, "MB/s", target=True)
            row.ours = self.best(row, "ours",
                                 partial(sm4.ctr_crypt, self.sm4_key, self.counter, buf))
            if self.pyx is not None:
                _check(self.pyx.sm4_ctr_encrypt(self.sm4_key, self.counter, buf)
                       == sm4.ctr_crypt(self.sm4_key, self.counter, buf),
                       "gmssl_pyx SM4-CTR agrees")
                row.gmssl_pyx = self.best(row, "gmssl_pyx", partial(
                    self.pyx.sm4_ctr_encrypt, self.sm4_key, self.counter, buf))
            self._gmssl_cbc(row, buf)
            self._openssl_evp(row, "sm4-ctr", "-evp", "sm4-ctr")
            self.rows.append(row)

    def _gmssl_cbc(self, row: Row, buf: bytes) -> None:
        """gmssl has neither GCM nor CTR: its SM4-CBC (key schedule included) stands in."""
        if self.gmssl is None:
            return
        row.gmssl_alg = "SM4-CBC"
        if len(buf) > GMSSL_MAX_SIZE:
            row.gmssl_alg = "skipped (seconds per call)"
            return
        g4 = self.gmssl.sm4
        iv = self.counter

        def cbc() -> bytes:
            cipher = g4.CryptSM4()
            cipher.set_key(self.sm4_key, g4.SM4_ENCRYPT)
            result: bytes = cipher.crypt_cbc(iv, buf)
            return result

        _check(cbc() == sm4.cbc_encrypt(self.sm4_key, iv, buf), "gmssl SM4-CBC agrees")
        row.gmssl = self.once(row, cbc)

    def _openssl_evp(self, row: Row, label: str, *alg: str) -> None:
        if self.openssl.path is None:
            row.notes.append("openssl not found")
            return
        self.log(f"  openssl speed {' '.join(alg)} -bytes {row.size}")
        try:
            row.openssl = self.openssl.evp_mb_per_s(row.size, *alg)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            row.notes.append(f"{label}: {exc}")


# ---- report ------------------------------------------------------------------------------------

def _size(n: int) -> str:
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    if n >= KIB and n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} B"


def _num(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 1:
        return f"{x:.1f}"
    return f"{x:.3f}"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else (f"{x:.2f}x" if x < 100 else f"{x:,.0f}x")


FOOTNOTE_MARKS = "*+#%&"


def render(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    notes: dict[str, str] = {}

    def cell(value: float | None, alg: str) -> str:
        if alg.startswith("skipped"):
            return "skipped"
        if value is None or not alg:
            return _num(value)
        mark = notes.setdefault(alg, FOOTNOTE_MARKS[len(notes) % len(FOOTNOTE_MARKS)])
        return f"{_num(value)}{mark}"

    header = ["operation", "size", "unit", "ours", "OpenSSL", "ours/OSSL", "target",
              "gmssl", "ours/gmssl", "gmssl_pyx", "ours/pyx"]
    table = [header]
    for r in rows:
        table.append([
            r.name, _size(r.size), r.unit, _num(r.ours), cell(r.openssl, r.openssl_alg),
            _ratio(r.ratio(r.openssl)), r.verdict, cell(r.gmssl, r.gmssl_alg),
            _ratio(r.ratio(r.gmssl)), _num(r.gmssl_pyx), _ratio(r.ratio(r.gmssl_pyx)),
        ])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    numeric = set(range(3, len(header))) - {6}
    lines = []
    for i, line in enumerate(table):
        lines.append("  ".join(c.rjust(w) if j in numeric else c.ljust(w)
                               for j, (c, w) in enumerate(zip(line, widths, strict=True)))
                     .rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))

    out = [f"trustspace crypto benchmark, {meta['date']}", ""]
    out += [f"  {k}: {v}" for k, v in meta.items() if k not in ("date", "openssl_short")]
    out += ["", *lines, ""]
    for alg, mark in notes.items():
        if alg == "SM4-CTR":
            out.append(f"{mark} {meta['openssl_short']}'s `speed` has no SM4-GCM: "
                       "its SM4-CTR figure stands in (GCM = CTR + GHASH, so this favours "
                       "OpenSSL).")
        elif alg == "SM4-CBC":
            out.append(f"{mark} gmssl has no SM4-GCM or CTR: its SM4-CBC figure stands in.")
        elif alg == "20-byte message":
            out.append(f"{mark} openssl speed sm2: EVP_DigestSign/Verify (Z + SM3 + SM2) of a "
                       f"20-byte message; ours: {MSG_LEN} bytes, same steps.")
        else:
            out.append(f"{mark} {alg}")
    out.append("n/a: no such figure (openssl speed has no SM2 encryption; gmssl_pyx hashes no "
               "files); skipped: pure-Python gmssl would take seconds per call.")
    out.append(f"MB = 10^6 bytes. Target: ours >= {TARGET}x OpenSSL on the rows with a verdict.")
    for r in rows:
        for note in r.notes:
            out.append(f"! {r.name} {_size(r.size)}: {note}")
    return "\n".join(out)


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of byte counts: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def pin_to_one_cpu() -> int | None:
    """Pin this process (and so its children) to the lowest CPU it may run on."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short durations (smoke test)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--openssl", default="openssl", help="openssl binary (default: on PATH)")
    parser.add_argument("--sizes", type=_parse_sizes, metavar="N,N,...",
                        help="SM3/SM4 buffer sizes in bytes (default: 8192,16384,1048576)")
    args = parser.parse_args(argv)

    settings = QUICK if args.quick else DEFAULT
    if args.sizes:
        settings = dataclasses.replace(settings, sizes=args.sizes)
    cpu = pin_to_one_cpu()
    openssl = OpenSSL(args.openssl, cpu, settings.openssl_seconds, settings.openssl_repeats)
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "default",
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "pinned_cpu": cpu,
        "openssl_cli": openssl.version(),
        "openssl_short": openssl.short_version(),
        "ours_sm2_libcrypto": _libcrypto.version(),
        "ours_sm3_sm4": f"cryptography {_version('cryptography')} "
                        f"({_crypto_backend.openssl_version_text()})",
        "gmssl": _version("gmssl"),
        "gmssl_pyx": _version("gmssl-pyx"),
        "python": platform.python_version(),
        "timing": f"best of {settings.repeats} x {settings.duration}s (ours, gmssl_pyx), "
                  f"1 x {settings.duration}s (gmssl), best of {settings.openssl_repeats} x "
                  f"`openssl speed -seconds {settings.openssl_seconds}`; all per CPU second",
    }
    started = time.perf_counter()
    bench = Bench(settings, openssl)
    print("measuring ...", file=sys.stderr, flush=True)
    bench.sm2()
    bench.sm3()
    bench.sm4()
    meta["elapsed"] = f"{time.perf_counter() - started:.0f}s"
    if bench.busy:
        meta["warning"] = ("something else ran on the benchmark CPU (share of wall clock we "
                           "got): " + ", ".join(bench.busy))
    print(render(bench.rows, meta))
    if args.json is not None:
        payload = {
            "meta": meta,
            "settings": asdict(settings),
            "target": TARGET,
            "rows": [{**asdict(r), "ratio_openssl": r.ratio(r.openssl),
                      "ratio_gmssl": r.ratio(r.gmssl), "ratio_gmssl_pyx": r.ratio(r.gmssl_pyx),
                      "verdict": r.verdict} for r in bench.rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
