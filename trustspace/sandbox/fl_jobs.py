"""Federated jobs: one job per provider, all of one consumer's training run. The job's code is the
Flower app (a zip of its folder); its parameters name the app's digest, the rounds, the minimum
number of clients per round, the declared differential privacy, and where the consumer's
SuperLink listens with the CA its certificate chains to.

Provider: `precheck` (at the request) applies the product's `federated` section
(`trustspace.federated.check_request`: rounds, clients, DP, SecAgg, approved apps; an app not
pre-approved waits for the operator, its digest shown). The answer carries a fresh SuperNode key's
SM2-signed binding (`supernode_binding`), so the consumer admits exactly that key. A worker then
runs the provider's SuperNode (`serve`) against the consumer's SuperLink, its ClientApp reading
only the product's file, until the consumer says the run ended (`consumer_done`) or the wall
limit; the delivery receipt names the rounds the consumer says this provider served and the
final model's digest, and the consumer countersigns it.

The ClientApp runs in the bubblewrap sandbox (`trustspace.federated.clientapp_sandbox`): one
sandboxed process per message, the product's file alone read-only, one relayed path to its
SuperNode's runtime port and no other network.

The model is an output too (`trustspace.federated.disclosure`, the spec's
``federated.release``): `precheck` refuses an app that declares per-round metrics the product
does not release, or that has no ``predict.py`` when the product asks for the
membership-inference check. With that check, `serve` keeps a holdout share of the rows (seeded
by the job id) out of the SuperNode's file; when the consumer's summary brings the final model
(digest-checked), the app's ``predict.py`` computes its class probabilities on the training and
holdout rows in the sandbox, sacroml's worst-case attack runs on them here, and a model that
fails is withheld: the delivery receipt's outcome is "withheld", the job ends TERMINATED with
`jobs.WITHHELD`, and the consumer's CLI does not write the model. The public checks name the
check and its result; its numbers go to the receipt's confidential part.

What the provider enforces itself (`clientapp_sandbox.Guard`): the sandbox runs only the app
whose FAB (rebuilt here from the approved app with `flwr build`) hashes as approved, and every
train reply gets the differential privacy of `enforced_dp` (Flower's LocalDpMod), whatever the
consumer's strategy does; the SM3 digest of every reply sent is recorded and goes into the
delivery receipt. Not enforced: SecAgg+ (checked as declared; Flower offers it only through its
legacy workflow).
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trustspace.crypto import Signer, canonical_json
from trustspace.federated import (
    DifferentialPrivacy,
    DpRequirement,
    FederatedPolicy,
    FederatedRefused,
    FederatedRequest,
    RefusalReason,
    SuperNodeKey,
    app_digest,
    bind_supernode_key,
    check_request,
)
from trustspace.federated.app_digest import AppInvalid, fab_sha256
from trustspace.federated.clientapp_sandbox import Guard
from trustspace.federated.deployment import Intervals, RemoteSuperNode
from trustspace.federated.disclosure import (
    ALWAYS_ALLOWED,
    MAX_CHECK_ROWS,
    MIN_ROWS,
    PREDICT_ENTRY,
    CheckFailed,
    MembershipRule,
    ModelInvalid,
    ReleasePolicy,
    Verdict,
    check,
    declared_metrics,
    decode_model,
    holdout_split,
    model_digest,
)
from trustspace.ledger.receipts import digest_of
from trustspace.registry.products import FederatedRelease, ProductSpec

from .bundle import BundleInvalid, unpack
from .errors import JobInvalid, ResultsInvalid, SandboxError
from .jobs import WITHHELD, RunReport
from .results import File, read_results
from .runner import MIB, BubblewrapSandbox, Limits, Sandbox, SandboxJob

SUPERNODE = "ts:superNode"  # in the provider's answer: {binding, credential}
_ADDRESS = re.compile(r"[A-Za-z0-9.-]{1,253}:[0-9]{1,5}")
# Provider-side waits: a SuperExec that starts ClientApps quickly (Flower's default is 1 s).
INTERVALS = Intervals(superexec_poll=0.1, reply_poll=0.2)
ADMISSION_SECONDS = 30.0  # how long a SuperNode may be refused while the consumer admits it
# The app's predict.py after the run: NumPy and the model over the provider's rows.
PREDICT_LIMITS = Limits(cpu_seconds=120, wall_seconds=300.0, memory_bytes=2048 * MIB)
MIA_CHECK = "membership inference (sacroml worst-case attack)"


def refusal_code(reason: RefusalReason | str) -> str:
    return "fl-" + (reason.value if isinstance(reason, RefusalReason) else reason)


def parameters(app: str, rounds: int, min_clients: int, superlink: str,
               root_certificate: bytes, dp: DifferentialPrivacy | None = None,
               secagg: bool = False) -> dict[str, Any]:
    return {"appDigest": app, "rounds": rounds, "minClients": min_clients,
            "superlink": superlink, "rootCertificate": root_certificate.decode(),
            "dp": None if dp is None else {"clippingNorm": dp.clipping_norm,
                                           "noiseMultiplier": dp.noise_multiplier},
            "secagg": secagg}


@dataclass(frozen=True)
class FlRequest:
    app_digest: str
    rounds: int
    superlink: str
    root_certificate: bytes
    needs_approval: bool  # the app is not among the product's pre-approved apps
    code: bytes = b""  # the app (a zip), whose predict.py the release check runs
    release: ReleasePolicy = field(default_factory=ReleasePolicy)
    # the DP this provider's SuperNode applies to every train reply (`enforced_dp`), or None
    dp: DifferentialPrivacy | None = None


def _request(params: Mapping[str, Any]) -> FederatedRequest:
    dp = params.get("dp")
    try:
        declared = None if dp is None else DifferentialPrivacy(
            float(dp["clippingNorm"]), float(dp["noiseMultiplier"]))
        return FederatedRequest(app_digest=str(params["appDigest"]),
                                rounds=params["rounds"], min_clients=params["minClients"],
                                dp=declared, secagg=params.get("secagg") is True)
    except (KeyError, TypeError, ValueError) as exc:
        raise FederatedRefused(RefusalReason.MALFORMED, f"parameters: {exc}") from None


def precheck(code: bytes, params: Mapping[str, Any], spec: ProductSpec) -> FlRequest:
    """Raise FederatedRefused for what the provider refuses; what remains to run otherwise."""
    offer = spec.federated
    if offer is None:
        raise FederatedRefused(RefusalReason.MODE_NOT_ALLOWED,
                               f"the operator enabled no federated training for {spec.id}")
    release = release_policy(offer.release)
    with tempfile.TemporaryDirectory(prefix="ts-fl-app-") as tmp:
        try:
            app = unpack(code, Path(tmp) / "app", entry=False)
            digest = app_digest(app)
            unreleased = _release_refusal(app, release)
        except (BundleInvalid, ValueError) as exc:
            raise FederatedRefused(RefusalReason.MALFORMED, f"the app: {exc}") from None
    request = _request(params)
    if request.app_digest != digest:
        raise FederatedRefused(RefusalReason.MALFORMED,
                               f"appDigest is not the app's digest ({digest})")
    superlink, ca = params.get("superlink"), params.get("rootCertificate")
    if not isinstance(superlink, str) or not _ADDRESS.fullmatch(superlink) or \
            not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca:
        raise FederatedRefused(RefusalReason.MALFORMED,
                               "superlink must be host:port and rootCertificate a PEM")
    approved = frozenset(offer.approved_apps)
    needs_approval = not approved  # no list: each app waits for the operator
    policy = FederatedPolicy(
        max_rounds=offer.max_rounds, min_clients=offer.min_clients,
        require_dp=None if offer.dp_min_noise_multiplier is None else DpRequirement(
            offer.dp_min_noise_multiplier, offer.dp_max_clipping_norm),
        require_secagg=offer.secagg, approved_apps=approved or frozenset({digest}))
    check_request(policy, request)
    if unreleased is not None:  # after the app's approval: an unapproved app says so first
        raise FederatedRefused(RefusalReason.APP_NOT_APPROVED, unreleased)
    return FlRequest(digest, request.rounds, superlink, ca.encode(), needs_approval, code,
                     release, enforced_dp(request.dp, policy.require_dp))


def enforced_dp(declared: DifferentialPrivacy | None,
                required: DpRequirement | None) -> DifferentialPrivacy | None:
    """What the provider's SuperNode applies itself (`clientapp_sandbox.Guard`): what the
    consumer declared, made at least as strong as the product requires (more noise, a
    tighter clip). None only when neither asks for DP; `check_request` has already refused a
    request that declares none where the product requires it."""
    if declared is None:
        return None
    if required is None:
        return declared
    clip = declared.clipping_norm if required.max_clipping_norm is None \
        else min(declared.clipping_norm, required.max_clipping_norm)
    return DifferentialPrivacy(clip, max(declared.noise_multiplier,
                                         required.min_noise_multiplier))


def release_policy(section: FederatedRelease | None) -> ReleasePolicy:
    """The spec's ``federated.release`` (validated with the spec) as the check takes it."""
    if section is None:
        return ReleasePolicy()
    rule = section.membership_inference
    return ReleasePolicy(
        metrics=None if section.metrics is None else frozenset(section.metrics),
        membership=None if rule is None else MembershipRule(rule.holdout, rule.max_auc))


def _release_refusal(app: Path, release: ReleasePolicy) -> str | None:
    """Why the app cannot meet the product's release policy, if it cannot. What is checked is
    what the app declares and ships: its ClientApp's code is what the operator approved."""
    if release.metrics is not None:
        declared = declared_metrics(app)
        if declared is None:
            return ("the product releases only some per-round metrics and the app declares "
                    "none ([tool.trustspace] metrics in its pyproject.toml)")
        extra = sorted(declared - release.metrics - ALWAYS_ALLOWED)
        if extra:
            return f"the app reports metrics the product does not release: {', '.join(extra)}"
    if release.membership is not None and not (app / PREDICT_ENTRY).is_file():
        return (f"the product checks the final model for membership inference and the app "
                f"has no {PREDICT_ENTRY} to compute the model's probabilities")
    return None


# ---- provider: the SuperNode ---------------------------------------------------------------

def _folder(home: Path, pid: str) -> Path:
    return home / "fl" / pid.replace(":", "_")


def supernode_binding(home: Path, pid: str, provider_id: str, signer: Signer,
                      credential: Mapping[str, Any] | None) -> dict[str, Any]:
    """A fresh SuperNode key for job `pid` (kept in the node's home, 0600) and its signed
    binding, with this node's membership credential for the consumer to check it by."""
    folder = _folder(home, pid)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = SuperNodeKey.generate()
    if not (folder / "supernode").exists():
        key.write(folder, "supernode")
    else:  # the consumer retried its request: the same key
        key = SuperNodeKey((folder / "supernode").read_bytes(),
                           (folder / "supernode.pub").read_bytes().strip())
    binding = bind_supernode_key(provider_id, key.public_openssh, signer)
    return {"binding": binding.to_json(), "credential": dict(credential or {})}


def consumer_done(home: Path, pid: str, summary: Mapping[str, Any]) -> None:
    """The consumer says the run ended: the worker serving job `pid` stops its SuperNode."""
    folder = _folder(home, pid)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = folder / "done.json.tmp"
    tmp.write_text(json.dumps(dict(summary)))
    os.replace(tmp, folder / "done.json")


def serve(home: Path, pid: str, provider_id: str, request: FlRequest, data: Path,
          workdir: Path, wall_seconds: float, started: datetime,
          sandbox: Sandbox | None = None) -> RunReport:
    """Run the SuperNode until the consumer's summary arrives (or the wall limit); then, if
    the product asks, check the final model before it is released."""
    folder = _folder(home, pid)
    rule = request.release.membership
    split: _Split | None = None
    if rule is not None:
        try:
            split = _split(data, rule, pid, workdir / "split")
        except ValueError as exc:
            return RunReport(outcome="refused", code="fl-holdout-too-small", detail=str(exc),
                             started_at=started, input_bytes=data.stat().st_size)
    train = data if split is None else split.train  # the SuperNode never sees the holdout
    try:  # the app the operator approved, as Flower packs it: the only one the sandbox runs
        guard = Guard(fab_sha256=_fab_sha256(request.code, workdir / "approved-app"),
                      dp=None if request.dp is None else {
                          "clipping_norm": request.dp.clipping_norm,
                          "noise_multiplier": request.dp.noise_multiplier},
                      metrics=None if request.release.metrics is None
                      else sorted(request.release.metrics | ALWAYS_ALLOWED))
    except (BundleInvalid, AppInvalid) as exc:
        return RunReport(outcome="failed", code="fl-app-unbuildable", detail=str(exc),
                         started_at=started)

    def start(attempt: int) -> RemoteSuperNode:
        return RemoteSuperNode(workdir / f"flower-{attempt}", request.superlink,
                               request.root_certificate, folder / "supernode", train,
                               intervals=INTERVALS, sandboxed=True, guard=guard)

    attempt = 0
    try:
        node = start(attempt)
    except PermissionError as exc:  # the product's file is not readable by the sandbox's uid
        return RunReport(outcome="failed", code="sandbox-error", detail=str(exc),
                         started_at=started)
    begun = time.monotonic()
    deadline = begun + wall_seconds
    done = folder / "done.json"
    try:
        while not done.exists():
            if not node.running and time.monotonic() - begun < ADMISSION_SECONDS:
                # The consumer registers our key once our answer reached it, which may be
                # after this worker started: a SuperNode refused in its first moments tries
                # again; later, it is gone for good.
                node.stop()
                time.sleep(0.5)
                attempt += 1
                node = start(attempt)
                continue
            if not node.running:
                return RunReport(outcome="failed", code="fl-supernode-exited",
                                 detail="the SuperNode stopped (refused by the SuperLink, or "
                                        "the consumer's SuperLink went away)",
                                 log=node.log(), started_at=started)
            if time.monotonic() > deadline:
                return RunReport(outcome="failed", code="timeout", log=node.log(),
                                 detail=f"no end of the run after {wall_seconds:.0f} s",
                                 started_at=started)
            time.sleep(0.2)
        log = node.log()
    finally:
        node.stop()
    updates = node.sent_updates()  # this attempt's: a refused earlier attempt sent nothing
    summary = json.loads(done.read_text())
    model = summary.pop("model", None)  # base64 of an .npz: not kept with the job
    served = [r for r in summary.get("rounds", []) if provider_id in r.get("trainedBy", [])]
    checks = [f"federated app {request.app_digest}", f"{len(served)} of {request.rounds} "
              "rounds served", "only model updates left the provider",
              f"the ClientApp ran only as the approved app (FAB sha256 {guard.fab_sha256})"]
    if request.dp is not None:
        checks.append(f"differential privacy applied by the provider to every train reply: "
                      f"clipping norm {request.dp.clipping_norm}, noise multiplier "
                      f"{request.dp.noise_multiplier}")
    refused = [u for u in updates if "refused" in u]
    if refused:
        checks.append(f"{len(refused)} message(s) refused: the app received was not the "
                      "approved one")
    sent = [{"type": u.get("type"), "round": u.get("round"), "digest": u.get("digest"),
             "dp": u.get("dp")} for u in updates if u.get("digest")]
    release: dict[str, Any] = {"metrics": None if request.release.metrics is None
                               else sorted(request.release.metrics), "membershipInference": None}
    if request.release.metrics is not None:
        checks.append("the app declares only per-round metrics the product releases")
    verdict: Verdict | None = None
    if rule is not None and split is not None:
        begun = time.monotonic()
        verdict = _check_model(request, rule, pid, model, summary.get("modelDigest"), split,
                               workdir / "check", sandbox or BubblewrapSandbox())
        # predict.py in the sandbox and the attack: the check's whole cost, for metering
        release["membershipInference"] = {**verdict.to_json(),
                                          "checkSeconds": round(time.monotonic() - begun, 2)}
        checks.append(f"{MIA_CHECK}: " + ("passed" if verdict.passed
                                          else "failed, model withheld"))
    findings: dict[str, Any] = {"updates": sent}  # each reply this provider sent, by digest
    if request.release != ReleasePolicy():
        findings.update({"modelDigest": summary.get("modelDigest"),
                         "release": release})  # also when withheld
    checks.append(f"{len(sent)} replies sent; their SM3 digests (list digest "
                  f"{digest_of(sent)}) in the confidential part")
    common: dict[str, Any] = {"checks": tuple(checks), "log": log, "started_at": started,
                              "input_bytes": data.stat().st_size, "findings": findings,
                              "extra": {"summary": summary}}
    if verdict is not None and not verdict.passed:
        return RunReport(outcome="withheld", code=WITHHELD,
                         detail=f"membership inference on {provider_id}'s rows: "
                                f"{verdict.reason}; the model is withheld", **common)
    result = canonical_json({"appDigest": request.app_digest,
                             "modelDigest": summary.get("modelDigest"),
                             "roundsServed": len(served), "roundsAsked": request.rounds,
                             "release": release, "updates": sent})
    return RunReport(outcome="succeeded", result=result, **common)


# ---- provider: the model-release check ---------------------------------------------------

@dataclass(frozen=True)
class _Split:
    train: Path  # every training row: the SuperNode's file
    members: Path  # training rows the check looks at (all, or MAX_CHECK_ROWS of them)
    nonmembers: Path  # holdout rows (all, or MAX_CHECK_ROWS of them)
    n_members: int
    n_nonmembers: int


def _split(data: Path, rule: MembershipRule, pid: str, folder: Path) -> _Split:
    """Write the product's rows apart: training rows for the SuperNode, and the samples of
    training and holdout rows the check compares. ValueError if too few rows for either."""
    parquet = data.suffix.lower() == ".parquet"
    if parquet:
        import pyarrow.parquet as pq

        table = pq.read_table(data)
        count = table.num_rows
    else:
        with data.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows = list(reader)
        count = len(rows)
    train, holdout = holdout_split(count, rule.holdout, pid)
    if len(train) < MIN_ROWS or len(holdout) < MIN_ROWS:
        raise ValueError(f"{count} rows: a holdout of {rule.holdout:g} leaves {len(train)} "
                         f"to train and {len(holdout)} to compare; the check needs at least "
                         f"{MIN_ROWS} of each")
    # Samples for the check, drawn from the split's own order: deterministic per job too.
    members = train if len(train) <= MAX_CHECK_ROWS else np.sort(
        np.random.default_rng(len(train)).choice(train, MAX_CHECK_ROWS, replace=False))
    nonmembers = holdout[:MAX_CHECK_ROWS]
    folder.mkdir(parents=True)
    folder.chmod(0o755)  # noqa: S103 - the sandbox's user reads the files, as the product's
    suffix = ".parquet" if parquet else ".csv"
    out: dict[str, Path] = {}
    for name, chosen in (("train", train), ("members", members), ("nonmembers", nonmembers)):
        target = folder / f"{name}{suffix}"
        if parquet:
            pq.write_table(table.take(chosen), target)
        else:
            _write_csv(target, header, [rows[i] for i in chosen])
        target.chmod(0o644)  # as materialize leaves the product's file
        out[name] = target
    return _Split(out["train"], out["members"], out["nonmembers"], len(members),
                  len(nonmembers))


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _check_model(request: FlRequest, rule: MembershipRule, pid: str, text: object,
                 digest: object, split: _Split, folder: Path, sandbox: Sandbox) -> Verdict:
    """The verdict on the consumer's final model; any failure to check it is a failed check
    (the model is withheld), with the reason."""
    try:
        raw, arrays = decode_model(text)
    except ModelInvalid as exc:
        return Verdict(False, f"no model to check: {exc}", {})
    if model_digest(arrays) != digest:
        return Verdict(False, "the model sent is not the one whose digest the run names", {})
    folder.mkdir(parents=True)
    folder.chmod(0o755)  # noqa: S103 - the sandbox's user reads the app and the model
    model = folder / "model.npz"
    model.write_bytes(raw)
    model.chmod(0o644)
    try:
        app = unpack(request.code, folder / "app", entry=False)
        ran = sandbox.run(SandboxJob(app, PREDICT_ENTRY, {
            "model": model, "members": split.members, "nonmembers": split.nonmembers},
            limits=PREDICT_LIMITS), folder / "run")
    except (BundleInvalid, JobInvalid, SandboxError) as exc:
        return Verdict(False, f"the app's {PREDICT_ENTRY} could not run: {exc}", {})
    if not ran.ok:
        return Verdict(False, f"the app's {PREDICT_ENTRY} failed in the sandbox: "
                              f"{ran.outcome.value}: {ran.reason}", {})
    try:
        members = _probabilities(ran.out_dir, "members", split.n_members)
        nonmembers = _probabilities(ran.out_dir, "nonmembers", split.n_nonmembers)
        return check(members, nonmembers, rule, seed=pid)
    except (ResultsInvalid, CheckFailed, ValueError) as exc:
        return Verdict(False, f"the check could not run: {exc}", {})


def _probabilities(out_dir: Path, name: str, rows: int) -> npt.NDArray[np.float64]:
    """`name`.npy as predict.py wrote it: one row of class probabilities per row given."""
    try:
        output = read_results(out_dir)[f"{name}.npy"]
    except KeyError:
        output = None
    if not isinstance(output, File):
        raise ValueError(f"{PREDICT_ENTRY} wrote no {name}.npy")
    value = np.load(output.path, allow_pickle=False)
    if value.ndim != 2 or value.shape[0] != rows:
        raise ValueError(f"{name}.npy must hold one row of class probabilities for each of "
                         f"the {rows} rows")
    return np.asarray(value, dtype=np.float64)


def _fab_sha256(code: bytes, folder: Path) -> str:
    """The sha256 of the FAB Flower builds from the app zip `code` (`app_digest.fab_sha256`)."""
    app = unpack(code, folder, entry=False)
    return fab_sha256(app)
