"""A federated model is an output too (issue 9): what the consumer may take away of a run.

A provider's `ReleasePolicy` (the product spec's ``federated.release``) names

- ``metrics``: the per-round metrics the app may report. An app declares what its ClientApp
  returns in its pyproject (``[tool.trustspace] metrics = [...]``, `declared_metrics`); the
  provider refuses an app that declares more, or nothing. ``num-examples`` is FedAvg's weight
  and always allowed (Flower does not aggregate it into the round's metrics).
- ``membership_inference`` (`MembershipRule`): a ``holdout`` share of the provider's rows never
  reaches its SuperNode (`holdout_split`, seeded by the job id). After the run, the app's
  ``predict.py`` (in the sandbox, `PREDICT_ENTRY`) gives the final model's class probabilities
  on the training rows (members) and the holdout rows (non-members), and `check` runs SACRO's
  worst-case membership-inference attack (sacroml's `WorstCaseAttack`) on them: an attack
  model learns to tell members from non-members by their sorted probabilities, `REPS` times on
  stratified splits with `ATTACK_TEST_SHARE` of the rows held out for scoring it. The model
  passes if the attack's mean AUC over the repetitions is at most ``max_auc``.

Why the mean AUC, not sacroml's significance counts: with a provider's few hundred rows the
attack's test split holds a few dozen non-members, and a model that leaks nothing still gets
single repetitions "significant" at p < 0.05 (3 of 12 runs of the logistic regression in
docs/federated.md); the repetitions share their rows, so the counts are not independent
either. The mean over the repetitions varies far less (sd 0.045 there, mean 0.47), and the
default bound 0.65 is the mean-AUC threshold of SACRO's own release recommendation
(`sacroml.attacks.attack_report_formatter.FinalRecommendationModule`). The significance counts
and the null AUC range are recorded with the verdict, for the people who read it.

sacroml imports torch (seconds, hundreds of MB): `check` runs it in a subprocess
(``python -m trustspace.federated.disclosure``), never in the node's process.
"""

from __future__ import annotations

import base64
import io
import json
import math
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trustspace.crypto import canonical_json, sm3

__all__ = [
    "ALWAYS_ALLOWED",
    "ATTACK_TEST_SHARE",
    "MAX_CHECK_ROWS",
    "MAX_MODEL_BYTES",
    "MIN_ROWS",
    "PREDICT_ENTRY",
    "REPS",
    "CheckFailed",
    "MembershipRule",
    "ModelInvalid",
    "ReleasePolicy",
    "Verdict",
    "allowed_metrics",
    "check",
    "decode_model",
    "declared_metrics",
    "encode_model",
    "holdout_split",
    "model_digest",
]

Probabilities = npt.NDArray[np.float64]

#: The app's entry that computes a model's class probabilities, at the app's top level.
PREDICT_ENTRY = "predict.py"
#: FedAvg's weight: sent by every ClientApp, never part of a round's aggregated metrics.
ALWAYS_ALLOWED = frozenset({"num-examples"})
#: The final model as the consumer sends it to the providers (an .npz), at most this big: it
#: travels in one DSP message, under the node's 1 MiB body limit once in base64.
MAX_MODEL_BYTES = 512 * 1024
REPS = 10  # attack repetitions (sacroml's default)
# Half the rows score the attack (sacroml's default is 0.2): with a few dozen non-members the
# AUC of a fifth of them swings by +-0.4 (sacroml's null 3-sd range 0.1..0.9), of half +-0.25.
ATTACK_TEST_SHARE = 0.5
MIN_ROWS = 10  # members and non-members each, or the attack says nothing
MAX_CHECK_ROWS = 10_000  # members checked at most (a sample): the attack's time grows with rows
CHECK_SECONDS = 300.0
_MODEL_FORMAT = "trustspace.model-digest/1"


class ModelInvalid(ValueError):
    """The model sent for the check is not a plain .npz of numeric arrays within the limit."""


class CheckFailed(RuntimeError):
    """The check could not run (not: the model failed it)."""


@dataclass(frozen=True)
class MembershipRule:
    holdout: float = 0.2  # share of the provider's rows kept out of training
    max_auc: float = 0.65  # the attack's mean AUC must not exceed it

    def __post_init__(self) -> None:
        if not (isinstance(self.holdout, float) and 0.05 <= self.holdout <= 0.5):
            raise ValueError("holdout must be a number within [0.05, 0.5]")
        if not (isinstance(self.max_auc, float) and 0.0 <= self.max_auc <= 1.0):
            raise ValueError("max_auc must be a number within [0, 1]")


@dataclass(frozen=True)
class ReleasePolicy:
    metrics: frozenset[str] | None = None  # None: not restricted
    membership: MembershipRule | None = None


def declared_metrics(app_dir: Path) -> frozenset[str] | None:
    """The metrics an app says its ClientApp reports (``[tool.trustspace] metrics``); None if
    it says nothing. Raises ValueError for a declaration that is not a list of names."""
    try:
        project = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"pyproject.toml: {exc}") from None
    section = project.get("tool", {}).get("trustspace", {})
    if not isinstance(section, dict) or "metrics" not in section:
        return None
    names = section["metrics"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError("[tool.trustspace] metrics must be a list of metric names")
    return frozenset(names)


def allowed_metrics(releases: Iterable[Iterable[str] | None]) -> frozenset[str] | None:
    """The metrics the consumer shows: those every provider allows (None: no limit at all)."""
    allowed: frozenset[str] | None = None
    for names in releases:
        if names is not None:
            allowed = frozenset(names) if allowed is None else allowed & frozenset(names)
    return allowed


# ---- the model -------------------------------------------------------------------------------

def model_digest(arrays: Mapping[str, npt.NDArray[Any]]) -> str:
    """``sm3:`` + SM3 of the canonical JSON of each array's name, dtype, shape and SM3 of its
    bytes (C order), by name: what receipts name as the final model."""
    parts = []
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        parts.append([name, a.dtype.str, list(a.shape), sm3(a.tobytes()).hex()])
    return "sm3:" + sm3(canonical_json({"format": _MODEL_FORMAT, "arrays": parts})).hex()


def encode_model(arrays: Mapping[str, npt.NDArray[Any]]) -> str:
    """The arrays as base64 of an .npz, for the run's summary."""
    buffer = io.BytesIO()
    np.savez(buffer, **dict(arrays))  # type: ignore[arg-type]
    return base64.b64encode(buffer.getvalue()).decode()


def decode_model(text: object) -> tuple[bytes, dict[str, npt.NDArray[Any]]]:
    """The .npz bytes and arrays of `encode_model`'s text; ModelInvalid for anything else
    (too big, not base64, pickled objects, non-numeric arrays)."""
    if not isinstance(text, str) or len(text) > (MAX_MODEL_BYTES * 4) // 3 + 4:
        raise ModelInvalid(f"the model must be base64 of an .npz of at most "
                           f"{MAX_MODEL_BYTES} bytes")
    try:
        raw = base64.b64decode(text, validate=True)
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name]) for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ModelInvalid(f"the model is not an .npz: {exc}") from None
    if len(raw) > MAX_MODEL_BYTES or not arrays:
        raise ModelInvalid(f"the model must hold arrays, in at most {MAX_MODEL_BYTES} bytes")
    if not all(a.dtype.kind in "biuf" for a in arrays.values()):
        raise ModelInvalid("the model's arrays must be numeric")
    return raw, arrays


# ---- the split, where the data is ----------------------------------------------------------

def holdout_split(rows: int, share: float, seed: str
                  ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row indices (training, holdout), each sorted: round(share * rows) rows drawn without
    replacement by a generator seeded with SM3 of `seed` (the job id), so the same job always
    holds out the same rows."""
    generator = np.random.default_rng(int.from_bytes(sm3(seed.encode())[:16], "big"))
    order = generator.permutation(rows)
    k = round(share * rows)
    return np.sort(order[k:]), np.sort(order[:k])


# ---- the verdict -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # one line, for the receipt's checks and the consumer
    findings: Mapping[str, Any]  # the numbers: confidential

    def to_json(self) -> dict[str, Any]:
        return {"check": "membership-inference", "passed": self.passed, "reason": self.reason,
                **dict(self.findings)}


def check(members: Probabilities, nonmembers: Probabilities, rule: MembershipRule,
          seed: str, timeout: float = CHECK_SECONDS) -> Verdict:
    """Run the worst-case attack on the model's class probabilities for its training rows
    (`members`, rows x classes) and holdout rows (`nonmembers`) in a subprocess; the same
    inputs and `seed` give the same verdict. Raises CheckFailed if it cannot run."""
    members, nonmembers = _probabilities(members, "members"), _probabilities(nonmembers,
                                                                             "non-members")
    if members.shape[1] != nonmembers.shape[1]:
        raise CheckFailed("members and non-members have different numbers of classes")
    with tempfile.TemporaryDirectory(prefix="ts-mia-") as tmp:
        given, taken = Path(tmp) / "in.npz", Path(tmp) / "out.json"
        np.savez(given, members=members, nonmembers=nonmembers)
        task = {"maxAuc": rule.max_auc, "seed": seed}
        try:
            ran = subprocess.run(  # noqa: S603 - our own module, our own arguments
                [sys.executable, "-m", "trustspace.federated.disclosure", str(given),
                 json.dumps(task), str(taken)],
                capture_output=True, timeout=timeout, cwd=tmp, check=False)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"the attack took more than {timeout:.0f} s") from None
        if ran.returncode != 0 or not taken.is_file():
            last = ran.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise CheckFailed(f"the attack failed (exit {ran.returncode}): {last[0][:300]}")
        out = json.loads(taken.read_text(encoding="utf-8"))
    return Verdict(bool(out.pop("passed")), str(out.pop("reason")),
                   {"holdout": rule.holdout, **out})


def _probabilities(value: object, what: str) -> Probabilities:
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != 2 or not 2 <= a.shape[1] <= 1000:
        raise CheckFailed(f"{what}: class probabilities must be rows x classes (2..1000)")
    if a.shape[0] < MIN_ROWS:
        raise CheckFailed(f"{what}: {a.shape[0]} rows, the check needs at least {MIN_ROWS}")
    if not np.isfinite(a).all() or (a < 0).any() or (a > 1).any():
        raise CheckFailed(f"{what}: probabilities must be finite and within [0, 1]")
    return a


def _attack(members: Probabilities, nonmembers: Probabilities, max_auc: float,
            seed: str) -> dict[str, Any]:
    """In the subprocess: sacroml's worst-case attack and the verdict, as JSON."""
    import logging
    import warnings

    logging.disable(logging.INFO)  # sacroml configures the root logger at INFO on import
    warnings.simplefilter("ignore")
    started = time.monotonic()
    from sacroml.attacks import worst_case_attack
    from sacroml.attacks.target import Target
    from sacroml.version import __version__

    number = int.from_bytes(sm3(seed.encode())[16:20], "big")
    np.random.seed(number)  # sacroml draws from NumPy's global generator
    with tempfile.TemporaryDirectory(prefix="ts-sacroml-") as out:
        attack = worst_case_attack.WorstCaseAttack(
            output_dir=out, write_report=False, n_reps=REPS, reproduce_split=number % 10_000,
            test_prop=ATTACK_TEST_SHARE, n_dummy_reps=0,
            attack_model_params={**worst_case_attack._DEFAULT_RF_PARAMS,
                                 "random_state": number % 2**31})
        report = attack.attack(Target(proba_train=members, proba_test=nonmembers))
    reps = list(report["attack_experiment_logger"]["attack_instance_logger"].values())
    glob = report["metadata"]["global_metrics"]

    def mean(key: str) -> float:
        return round(float(np.mean([r[key] for r in reps])), 4)

    aucs = [float(r["AUC"]) for r in reps]
    auc = mean("AUC")
    passed = math.isfinite(auc) and auc <= max_auc
    tool = f"sacroml {__version__} worst-case attack"
    return {
        "passed": passed,
        "reason": f"{tool}: mean AUC {auc:.3f} {'<=' if passed else '>'} {max_auc:g}",
        "tool": tool, "sacroml": __version__, "maxAuc": max_auc,
        "members": int(members.shape[0]), "nonMembers": int(nonmembers.shape[0]),
        "reps": len(reps), "attackTestShare": ATTACK_TEST_SHARE,
        "auc": {"mean": auc, "min": round(min(aucs), 4), "max": round(max(aucs), 4)},
        "tpr": mean("TPR"), "fpr": mean("FPR"), "advantage": mean("Advantage"),
        "tprAtFpr0.1": mean("TPR@0.1%"),
        "significantReps": int(glob["n_sig_auc_p_vals"]),
        "significantRepsCorrected": int(glob["n_sig_auc_p_vals_corrected"]),
        "nullAuc3sdRange": str(glob["null_auc_3sd_range"]),
        "seconds": round(time.monotonic() - started, 2)}


def _main(argv: list[str]) -> int:
    given, task, taken = Path(argv[0]), json.loads(argv[1]), Path(argv[2])
    with np.load(given, allow_pickle=False) as npz:
        members, nonmembers = npz["members"], npz["nonmembers"]
    result = _attack(members, nonmembers, float(task["maxAuc"]), str(task["seed"]))
    taken.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
