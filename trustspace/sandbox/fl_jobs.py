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

Not yet: DP and SecAgg are checked as declared, not enforced here; the digests of the updates
sent are not recorded (they pass through Flower's SuperNode, not through trustspace).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

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
from trustspace.federated.deployment import Intervals, RemoteSuperNode
from trustspace.registry.products import ProductSpec

from .bundle import BundleInvalid, unpack
from .jobs import RunReport

SUPERNODE = "ts:superNode"  # in the provider's answer: {binding, credential}
_ADDRESS = re.compile(r"[A-Za-z0-9.-]{1,253}:[0-9]{1,5}")
# Provider-side waits: a SuperExec that starts ClientApps quickly (Flower's default is 1 s).
INTERVALS = Intervals(superexec_poll=0.1, reply_poll=0.2)
ADMISSION_SECONDS = 30.0  # how long a SuperNode may be refused while the consumer admits it


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
    with tempfile.TemporaryDirectory(prefix="ts-fl-app-") as tmp:
        try:
            app = unpack(code, Path(tmp) / "app", entry=False)
            digest = app_digest(app)
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
    return FlRequest(digest, request.rounds, superlink, ca.encode(), needs_approval)


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
          workdir: Path, wall_seconds: float, started: datetime) -> RunReport:
    """Run the SuperNode until the consumer's summary arrives (or the wall limit)."""
    folder = _folder(home, pid)

    def start(attempt: int) -> RemoteSuperNode:
        return RemoteSuperNode(workdir / f"flower-{attempt}", request.superlink,
                               request.root_certificate, folder / "supernode", data,
                               intervals=INTERVALS, sandboxed=True)

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
    summary = json.loads(done.read_text())
    served = [r for r in summary.get("rounds", []) if provider_id in r.get("trainedBy", [])]
    result = canonical_json({"appDigest": request.app_digest,
                             "modelDigest": summary.get("modelDigest"),
                             "roundsServed": len(served), "roundsAsked": request.rounds})
    checks = (f"federated app {request.app_digest}", f"{len(served)} of {request.rounds} "
              "rounds served", "only model updates left the provider")
    return RunReport(outcome="succeeded", result=result, checks=checks, log=log,
                     started_at=started, input_bytes=data.stat().st_size,
                     extra={"summary": summary})
