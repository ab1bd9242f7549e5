"""The data space of `trustspace demo`: an authority with a regulator, three hospitals, a research
institute and a bank, each a real `trustspace serve` process on a loopback port, walking through
every exchange the node supports. Each step returns one line of what it proved, or raises.

The data is real and ships with scikit-learn (no download): the diabetes study of Efron et al.
(442 patients, ten baseline measurements and a disease-progression score) and the Wisconsin
breast-cancer biopsies (569, 30 features, benign or malignant), split between the hospitals by
patient; 114 biopsies are held out to judge the federated model.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from trustspace.connector.auth import encode_credential
from trustspace.connector.httpsig import CREDENTIAL_HEADER, sign_request
from trustspace.connector.localspace import LocalDataSpace, LocalNode
from trustspace.crypto import SM2PrivateKey, sm3_file

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
COLUMNS = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "progression")
SCORE_COLUMNS = ("age", "bmi", "bp", "s5")
BANK_WEIGHTS = (0.012, 0.08, 0.021, 0.9)  # the bank's private model: never leaves it in clear


class DemoFailed(AssertionError):
    pass


def check(condition: object, what: str) -> None:
    if not condition:
        raise DemoFailed(what)


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out waiting for {what}")
        time.sleep(0.05)


def diabetes() -> npt.NDArray[np.float64]:
    """The 442 × 11 table (scikit-learn's unscaled copy of the original data)."""
    from sklearn.datasets import load_diabetes  # type: ignore[import-untyped]

    data = load_diabetes(scaled=False)
    return np.column_stack([data.data, data.target]).astype(np.float64)


FL_ROUNDS = 2
HELD_OUT = 114


def biopsies() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                        npt.NDArray[np.int64], list[npt.NDArray[np.int64]]]:
    """Features, labels, the held-out rows and each hospital's rows."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(7).permutation(len(y))
    return (x.astype(np.float64), y.astype(np.float64), order[:HELD_OUT],
            list(np.array_split(order[HELD_OUT:], len(HOSPITALS))))


def _offers(manual: bool) -> list[dict[str, Any]]:
    """A research offer (sandbox) and a scoring offer (homomorphic); with `manual`, each request
    waits for the hospital's operator (the hint is the product's: any manual offer makes all)."""
    hint = {"ts:negotiation": "manual"} if manual else {}

    def offer(offer_id: str, purpose: str, modes: list[str]) -> dict[str, Any]:
        return {"@id": offer_id, "ts:purposes": ["research", "credit-scoring"], **hint,
                "permission": [{"action": "use", "constraint": [
                    {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": purpose},
                    {"leftOperand": "ts:computeMode", "operator": "isAnyOf",
                     "rightOperand": modes}]}]}

    return [offer("research", "research", ["sandbox"]),
            offer("scoring", "credit-scoring", ["homomorphic"])]


@dataclass(frozen=True)
class Chain:
    """`--ledger evm`: the hospitals' logs are anchored on this chain (one writer key each)."""

    rpc_url: str
    contract: str
    writer_keys: tuple[str, ...]  # hex, one per hospital, authorised on the contract

    @classmethod
    def deploy(cls, rpc_url: str, keys: list[str]) -> Chain:
        """Deploy the ReceiptLedger with the first key and authorise the next three."""
        from eth_account import Account

        from trustspace.ledger.evm import EvmLedger, deploy

        if len(keys) < 1 + len(HOSPITALS):
            raise DemoFailed(f"--ledger evm needs {1 + len(HOSPITALS)} funded chain keys "
                             "(the owner's, then one per hospital)")
        owner, writers = keys[0], tuple(keys[1 : 1 + len(HOSPITALS)])
        address = deploy(rpc_url, owner)
        ledger = EvmLedger(rpc_url, address, owner)
        for key in writers:
            ledger.wait(ledger.authorise(Account.from_key(key).address))
        return cls(rpc_url, address, writers)

    def env(self, hospital: str) -> dict[str, str]:
        return {"TRUSTSPACE_LEDGER": "evm", "TRUSTSPACE_EVM_RPC_URL": self.rpc_url,
                "TRUSTSPACE_EVM_CONTRACT": self.contract,
                "TRUSTSPACE_EVM_KEY": self.writer_keys[HOSPITALS.index(hospital)]}


class Story:
    def __init__(self, space: LocalDataSpace, chain: Chain | None = None) -> None:
        self.space = space
        self.chain = chain
        self.table = diabetes()
        self.parts: dict[str, npt.NDArray[np.float64]] = {}
        self.agreements: dict[str, str] = {}  # name -> agreement id
        self.federated: list[str] = []  # the institute's agreements with each hospital

    def node(self, name: str) -> LocalNode:
        return self.space.members[name]

    # ---- the steps ---------------------------------------------------------------------------

    def members(self) -> str:
        wanted = [("regulator", "regulator"), *((h, "provider") for h in HOSPITALS),
                  ("research-institute", "consumer"), ("bank", "consumer")]
        chain = self.chain  # with a chain, each hospital keeps its own log, anchored on it
        self.space.add_members(wanted, {h: chain.env(h) for h in HOSPITALS} if chain else None)
        roles = [self.node(n).ok("GET", "/api/node")["roles"][0] for n, _ in wanted]
        anchor = self.space.authority.ok("GET", "/api/node")["keyId"]
        return (f"authority {anchor[:12]}… admitted {len(roles)} members ({roles.count('provider')}"
                f" providers, {roles.count('consumer')} consumers, a regulator), each with an "
                "SM2-signed membership credential")

    def publish(self) -> str:
        versions = []
        for i, hospital in enumerate(HOSPITALS):
            part = self.table[i::3]
            self.parts[hospital] = part
            path = self.space.root / f"diabetes-{hospital}.csv"
            with path.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(COLUMNS)
                for row in part:
                    writer.writerow([int(row[0]), int(row[1]), *(f"{v:g}" for v in row[2:])])
            added = self.node(hospital).ok("POST", "/api/products", {
                "id": f"diabetes-{hospital[-1]}",
                "title": f"Diabetes progression, {hospital}",
                "description": "Baseline measurements and one-year disease progression, "
                               "one row per patient",
                "keywords": ["diabetes", "endocrinology"], "category": "health/outpatient",
                "level": "general",
                "columns": [{"name": "age", "type": "integer"},
                            {"name": "sex", "type": "integer"},
                            *({"name": c, "type": "number"} for c in COLUMNS[2:])],
                "source": {"kind": "csv", "path": str(path)},
                "modes": ["sandbox", "homomorphic"],
                "offers": _offers(manual=hospital == "hospital-b"),
                "homomorphic": {"programs": ["column_means", "weighted_sum", "linear_scores"],
                                "columns": list(SCORE_COLUMNS), "per_row": True}})
            check(added["registered"] and added["dataDigest"] == "sm3:" + sm3_file(path).hex(),
                  f"{hospital}: registered with the data's SM3 digest")
            versions.append(f"{added['rows']}")
            self._publish_biopsies(hospital, i)
        shares = " + ".join(versions)
        return (f"three hospitals published their share of the diabetes study ({shares} "
                "patients), each registered by the authority with its data's SM3 digest")

    def _publish_biopsies(self, hospital: str, i: int) -> None:
        from trustspace.federated import LOGREG_APP, app_digest

        x, y, _, parts = biopsies()
        path = self.space.root / f"biopsies-{hospital}.csv"
        header = ",".join([*(f"f{j}" for j in range(x.shape[1])), "label"])
        np.savetxt(path, np.column_stack([x[parts[i]], y[parts[i]]]), delimiter=",",
                   header=header, comments="", fmt="%.10g")
        offer = {"@id": "federated", "ts:purposes": ["research"], "permission": [{
            "action": "use", "constraint": [
                {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "research"},
                {"leftOperand": "ts:computeMode", "operator": "isAnyOf",
                 "rightOperand": ["federated"]}]}]}
        self.node(hospital).ok("POST", "/api/products", {
            "id": f"biopsies-{hospital[-1]}", "title": f"Breast biopsies, {hospital}",
            "keywords": ["oncology", "biopsy"], "category": "health/outpatient",
            "level": "general",
            "columns": [*({"name": f"f{j}", "type": "number"} for j in range(x.shape[1])),
                        {"name": "label", "type": "integer"}],
            "source": {"kind": "csv", "path": str(path)}, "modes": ["federated"],
            "offers": [offer],
            "federated": {"max_rounds": 5, "min_clients": 3,
                          "approved_apps": [app_digest(LOGREG_APP)]}})

    def search(self) -> str:
        found = self.node("research-institute").ok(
            "POST", "/api/catalog/search", {"keywords": ["diabetes"], "mode": "sandbox"})["results"]
        ids = sorted(r["datasetId"] for r in found)
        check(ids == ["diabetes-a", "diabetes-b", "diabetes-c"], f"federated search: {ids}")
        checked = self.node("research-institute").ok(
            "POST", "/api/catalog/verify", {"url": self.node("hospital-a").url,
                                            "dataset": "diabetes-a"})
        check(all(checked["checks"].values()), f"registration checks: {checked['checks']}")
        providers = len({r["provider"] for r in found})
        return (f"the research institute found {len(found)} products at {providers} hospitals "
                "through the authority; hospital-a's registration certificate "
                f"{checked['registration'][4:16]}… verified against the trust anchor")

    def _negotiate(self, consumer: str, hospital: str, offer: str) -> str:
        return self._negotiate_dataset(consumer, hospital, f"diabetes-{hospital[-1]}", offer)

    def _negotiate_dataset(self, consumer: str, hospital: str, dataset: str, offer: str) -> str:
        started = self.node(consumer).ok("POST", "/api/negotiations", {
            "provider_url": self.node(hospital).url, "dataset": dataset, "offer": offer})
        return str(started["pid"])

    def _finalized(self, consumer: str, pid: str) -> str:
        def done() -> str | None:
            shown = self.node(consumer).ok("GET", f"/api/negotiations/{pid}")
            check(shown["state"] != "TERMINATED", f"negotiation terminated: {shown}")
            return shown["agreementId"] if shown["state"] == "FINALIZED" else None

        return str(wait_for(done, "the agreement"))

    def negotiate(self) -> str:
        # Every request is sent first and the nodes negotiate side by side; the demo then waits
        # for each outcome. 1. automatic: the research offer, and the institute's federated
        # study with each hospital
        auto = self._negotiate("research-institute", "hospital-a", "research")
        studies = [self._negotiate_dataset("research-institute", name, f"biopsies-{name[-1]}",
                                           "federated") for name in HOSPITALS]
        # 2. manual: hospital-b's operator approves the bank's scoring request
        manual = self._negotiate("bank", "hospital-b", "scoring")
        # 3. refused by policy: the bank asks hospital-c for the scoring terms without their
        # purpose constraint, in a request signed by its own node
        refused = self._forged_offer("bank", "hospital-c")
        check(refused.status_code == 400 and refused.json().get("code") == "offer-mismatch",
              f"the loosened offer was not refused: {refused.status_code} {refused.text}")
        hospital = self.node("hospital-b")
        waiting = wait_for(lambda: [n for n in hospital.ok("GET", "/api/negotiations")[
            "negotiations"] if n["consumerPid"] == manual and n["state"] == "REQUESTED"],
            "the bank's request at hospital-b")
        approved = hospital.cli("negotiations", "approve", waiting[0]["pid"])
        check(approved.returncode == 0, f"approve: {approved.stderr}")
        self.agreements["research"] = self._finalized("research-institute", auto)
        self.agreements["scoring"] = self._finalized("bank", manual)
        self.federated = [self._finalized("research-institute", pid) for pid in studies]
        shown = hospital.ok("GET", f"/api/agreements/{self.agreements['scoring']}")
        roles = [s["role"] for s in shown["document"]["signatures"]]
        check(roles == ["provider", "consumer"], "the agreement is signed by both")
        return ("research-institute ↔ hospital-a (and ↔ each hospital for a federated study) "
                "agreed automatically; bank ↔ hospital-b "
                "after hospital-b's operator approved; the bank's request to hospital-c with the "
                "purpose constraint removed refused by policy (400 offer-mismatch); agreements "
                f"signed by {' and '.join(roles)} with SM2")

    def _signed(self, member: str, method: str, url: str, body: dict[str, Any] | None
                ) -> httpx.Response:
        node = self.node(member)
        key = SM2PrivateKey.from_pem((node.home / "node-key.pem").read_bytes())
        credential = node.ok("GET", "/api/node")["credential"]
        data = b"" if body is None else json.dumps(body).encode()
        headers = {CREDENTIAL_HEADER: encode_credential(credential)}
        if body is not None:
            headers["content-type"] = "application/json"
        headers.update(sign_request(method, url, headers, data, key))
        return httpx.request(method, url, headers=headers, content=data, timeout=10)

    def _forged_offer(self, consumer: str, hospital: str) -> httpx.Response:
        provider = self.node(hospital)
        shown = self._signed(consumer, "GET",
                             f"{provider.url}/catalog/datasets/diabetes-{hospital[-1]}", None)
        offer = next(o for o in shown.json()["hasPolicy"] if o["@id"] == "scoring")
        rule = offer["permission"][0]
        rule["constraint"] = [c for c in rule["constraint"]
                              if c["leftOperand"] != "odrl:purpose"]
        message = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
                   "@type": "ContractRequestMessage", "consumerPid": "urn:uuid:demo-forged",
                   "callbackAddress": self.node(consumer).url,
                   "offer": {**offer, "target": f"diabetes-{hospital[-1]}"}}
        return self._signed(consumer, "POST", f"{provider.url}/negotiations/request", message)

    def receipts(self) -> str:
        check(len(self.agreements) == 2, "two agreements to look for")
        lines = []
        for name, agreement in self.agreements.items():
            hospital = self.node("hospital-a" if name == "research" else "hospital-b")

            def logged(hospital: LocalNode = hospital, agreement: str = agreement) -> Any:
                rows = hospital.ok("GET", "/api/receipts", agreement=agreement)["receipts"]
                return rows if rows and rows[0]["status"] == "logged" else None

            rows = wait_for(logged, f"the {name} authorization receipt")
            shown = hospital.ok("GET", f"/api/receipts/{rows[0]['id']}")
            roles = [s["role"] for s in shown["document"]["signatures"]]
            check(roles == ["provider", "consumer"], "receipt countersigned")
            lines.append(f"#{shown['evidence']['index']}")
        where = ("the authority's SM3 Merkle log" if self.chain is None else
                 f"its hospital's SM3 Merkle log, anchored on the chain at {self.chain.contract}")
        return (f"authorization receipts {' and '.join(lines)} signed by provider and consumer, "
                f"policies sealed to the parties and the regulator, each in {where} with an "
                "inclusion proof to a signed checkpoint")

    def sandbox_job(self) -> str:
        institute = self.node("research-institute")
        script = self.space.root / "mean_bmi_by_sex.py"
        script.write_text(
            "from trustspace.sandbox import api\n"
            "rows = api.read_rows('diabetes-a')\n"
            "groups = {}\n"
            "for r in rows:\n"
            "    groups.setdefault(r['sex'], []).append(float(r['bmi']))\n"
            "api.table('mean_bmi_by_sex', ['sex', 'mean_bmi'],\n"
            "          [[s, sum(v) / len(v)] for s, v in sorted(groups.items())],\n"
            "          counts=[len(v) for _, v in sorted(groups.items())], statistic='mean')\n")
        started = time.perf_counter()
        done = institute.cli("run", self.agreements["research"], str(script),
                             "--purpose", "research")
        check(done.returncode == 0, f"job: {done.stderr}")
        elapsed = time.perf_counter() - started
        released = json.loads(done.stdout)["result"]["release"]["outputs"][0]
        part = self.parts["hospital-a"]
        for sex, value in released["rows"]:
            expected = part[part[:, 1] == float(sex), 2].mean()
            check(abs(value - expected) < 1e-9, f"mean BMI of sex {sex}: {value} ≠ {expected}")
        raw = self.space.root / "raw_rows.py"
        raw.write_text(
            "from trustspace.sandbox import api\n"
            "rows = api.read_rows('diabetes-a')[:20]\n"
            "api.table('rows', ['age', 'sex', 'bmi', 'n'],\n"
            "          [[r['age'], r['sex'], r['bmi'], 1] for r in rows], statistic='count')\n")
        leak = institute.cli("run", self.agreements["research"], str(raw), "--purpose",
                             "research")
        check(leak.returncode == 1 and "release-refused" in leak.stderr, "raw rows refused")
        means = ", ".join(f"sex {s}: {v:.2f}" for s, v in released["rows"])
        return (f"code ran in hospital-a's bubblewrap sandbox, result sealed to the institute in "
                f"{elapsed:.1f} s (CLI included): mean BMI {means}, equal to NumPy on the same "
                "rows; a job returning raw rows was refused (release-refused) with a receipt")

    def homomorphic_job(self) -> str:
        bank = self.node("bank")
        weights = self.space.root / "bank-weights.json"
        weights.write_text(json.dumps(list(BANK_WEIGHTS)))
        out = self.space.root / "scores.json"
        started = time.perf_counter()
        done = bank.cli("he", "run", self.agreements["scoring"], "linear_scores",
                        "--columns", ",".join(SCORE_COLUMNS), "--input", str(weights),
                        "--purpose", "credit-scoring", "--output", str(out))
        check(done.returncode == 0, f"he run: {done.stderr}")
        elapsed = time.perf_counter() - started
        scores = np.asarray(json.loads(out.read_text())["values"])
        part = self.parts["hospital-b"]
        index = [COLUMNS.index(c) for c in SCORE_COLUMNS]
        expected = part[:, index] @ np.asarray(BANK_WEIGHTS)
        error = float(np.abs(scores - expected).max())
        check(scores.shape == expected.shape and error < 1e-3, f"scores differ by {error}")
        return (f"the bank scored hospital-b's {len(scores)} patients under CKKS in "
                f"{elapsed:.1f} s: its weights and the scores stayed encrypted, the rows never "
                f"left hospital-b; decrypted scores equal NumPy's within {error:.1e}")

    def federated_job(self) -> str:
        from trustspace.federated import LOGREG_APP
        from trustspace.federated.apps.logreg.logreg_app import task

        institute = self.node("research-institute")
        model = self.space.root / "model.npz"
        started = time.perf_counter()
        done = institute.cli("fl", "run", "--agreements", ",".join(self.federated),
                             "--app", str(LOGREG_APP), "--rounds", str(FL_ROUNDS),
                             "--purpose", "research", "--output", str(model))
        check(done.returncode == 0, f"fl run: {done.stderr[-1500:]}")
        elapsed = time.perf_counter() - started
        shown = json.loads(done.stdout)
        x, y, held_out, parts = biopsies()
        with np.load(model) as arrays:
            weights, mean, std = arrays["weights"], arrays["mean"], arrays["std"]
        rows = np.concatenate(parts)
        central = task.train(task.initial_weights(x.shape[1]),
                             task.standardise(x[rows], mean, std), y[rows],
                             epochs=FL_ROUNDS * 40, lr=0.5, l2=0.0001)
        x_test = task.standardise(x[held_out], mean, std)
        _, central_accuracy = task.evaluate(central, x_test, y[held_out])
        _, federated_accuracy = task.evaluate(weights, x_test, y[held_out])
        check(abs(federated_accuracy - central_accuracy) <= 0.02,
              f"federated {federated_accuracy:.3f} vs central {central_accuracy:.3f}")
        check(len(shown["receipts"]) == 3 and all(shown["receipts"].values()),
              "a delivery receipt from each hospital")
        return (f"{FL_ROUNDS} Flower rounds across the three hospitals' SuperNodes (keys bound "
                f"by SM2, TLS) in {elapsed:.0f} s; only model updates left the hospitals; "
                f"held-out accuracy {federated_accuracy:.3f} vs {central_accuracy:.3f} trained "
                f"centrally; model {shown['modelDigest'][4:16]}…, 3 delivery receipts")

    def violations(self) -> str:
        hospital = self.node("hospital-a")
        request = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
                   "@type": "CatalogRequestMessage", "filter": []}
        bare = httpx.post(f"{hospital.url}/catalog/request", json=request, timeout=10)
        check(bare.status_code == 401, "unsigned request refused")
        script = self.space.root / "count.py"
        script.write_text("from trustspace.sandbox import api\n"
                          "api.aggregate('n', len(api.read_rows('diabetes-a')), None)\n")
        with ThreadPoolExecutor(max_workers=1) as pool:  # a new member joins meanwhile
            joining = pool.submit(self.space.add_member, "former-partner", "consumer")
            wrong = self.node("research-institute").cli(
                "run", self.agreements["research"], str(script), "--purpose", "marketing")
            check(wrong.returncode == 1 and "policy-denied" in wrong.stderr,
                  f"a job for another purpose: {wrong.stderr}")
            leaving = joining.result()
        node = leaving.ok("GET", "/api/node")
        self.space.authority.ok("POST", "/api/members/revoke",
                                {"participant_id": node["participantId"]})
        refused = leaving.api("POST", "/api/catalog/remote", {"url": hospital.url})
        check(refused.status_code == 401 and refused.json()["error"] == "revoked",
              f"revoked member refused: {refused.text}")
        return (f"an unsigned request refused ({bare.status_code}); a job for a purpose the "
                "agreement does not allow refused (policy-denied) with a refusal receipt; a "
                "revoked member refused (401 revoked)")

    def regulator(self) -> str:
        regulator = self.node("regulator")
        summary = self._signed("regulator", "GET", f"{self.space.authority.url}/audit/summary",
                               None)
        check(summary.status_code == 200, f"audit summary: {summary.text}")
        every = [*self.agreements.values(), *self.federated]
        sources = {agreement: self._source(agreement) for agreement in every}

        def trace(agreement: str) -> list[str]:
            traced = regulator.cli("audit", "trace", "--agreement", agreement,
                                   *sources[agreement])
            check(traced.returncode == 0 and "authorization" in traced.stdout,
                  f"audit trace: {traced.stderr}")
            return [k for k in ("delivery", "refusal") if k in traced.stdout]

        def verify_log() -> subprocess.CompletedProcess[str]:
            verified: subprocess.CompletedProcess[str] = wait_for(
                lambda: (v := regulator.cli("audit", "verify", "--require-final"))
                .returncode == 0 and v, "a final checkpoint", timeout=30)
            return verified

        def verify_anchored(hospital: str, chain: Chain) -> subprocess.CompletedProcess[str]:
            verified = regulator.cli("audit", "verify", "--source", self.node(hospital).url,
                                     "--rpc-url", chain.rpc_url, "--contract", chain.contract)
            check(verified.returncode == 0 and " 0 anchors" not in verified.stderr,
                  f"audit verify {hospital}: {verified.stdout} {verified.stderr}")
            return verified

        # Each trace and verification is a CLI process of its own, read-only: run side by side.
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            if self.chain is None:  # the authority's shared log, up to a final checkpoint
                verifying = [pool.submit(verify_log)]
            else:  # each hospital's log, and its anchors read from the chain
                verifying = [pool.submit(verify_anchored, h, self.chain) for h in HOSPITALS]
            tracing = [pool.submit(trace, agreement) for agreement in every]
            kinds = [kind for traced in tracing for kind in traced.result()]
            verified = [v.result() for v in verifying][-1]
        logs = ("the whole log" if self.chain is None else
                "each hospital's log against its anchors on the chain")
        return (f"the regulator read the audit summary, traced all {len(every)} agreements "
                "(authorization, "
                f"{', '.join(sorted(set(kinds)))} receipts; sealed policies opened with its own "
                f"key) and verified {logs}: {verified.stderr.strip()}")

    def _source(self, agreement: str) -> tuple[str, ...]:
        """Where a regulator reads an agreement's receipts: the authority's shared log, or with
        a chain, the providing hospital's own log."""
        if self.chain is None:
            return ()
        for hospital in HOSPITALS:
            mine = self.node(hospital).ok("GET", "/api/agreements")["agreements"]
            if any(a.get("agreementId") == agreement for a in mine):
                return ("--source", self.node(hospital).url)
        raise DemoFailed(f"no hospital holds agreement {agreement}")

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        return [(name, getattr(self, method)) for name, method in STEPS]


# (what the step shows, the Story method that runs it), in order
STEPS: tuple[tuple[str, str], ...] = (
    ("members enrolled", "members"), ("products published", "publish"),
    ("federated search", "search"), ("contracts negotiated", "negotiate"),
    ("receipts logged", "receipts"), ("sandbox statistics", "sandbox_job"),
    ("homomorphic scoring", "homomorphic_job"), ("federated training", "federated_job"),
    ("policy violations refused", "violations"),
    ("regulator", "regulator"))
