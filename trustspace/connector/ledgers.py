"""The ledger a node writes its receipts to (chosen by `ledger` in the settings), and the
authority's witness pusher that collects cosignatures on the shared log's checkpoints."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import httpx
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from trustspace.crypto import SignedDocument, canonical_json
from trustspace.ledger import merkle
from trustspace.ledger.backend import Evidence, Ledger
from trustspace.ledger.checkpoint import SignedNote, verify_note
from trustspace.ledger.errors import LedgerError, LedgerUnavailable, NoteInvalid, ProofInvalid
from trustspace.ledger.log import leaf_bytes
from trustspace.ledger.tables import LogCheckpoint
from trustspace.registry.tables import Member

from .background import Loop
from .client import TLS
from .httpsig import CREDENTIAL_HEADER, SM2RequestAuth
from .node import MEMBERSHIP_STATE, Node

log = logging.getLogger("trustspace.ledger")


class LocalLedger:
    """The node's own transparency log, in its own database."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def submit(self, documents: Sequence[SignedDocument]) -> list[Evidence]:
        node, tlog = self.node, self.node.log
        membership = node.membership()
        submitter = membership.participant_id if membership else node.settings.name
        with node.db.transaction() as session:
            appended = tlog.append(session, documents, submitter, node.clock())
            checkpoint = tlog.checkpoint(session, node.clock())
            return [Evidence(a.receipt_id, a.digest, a.index, checkpoint.size,
                             tlog.inclusion(session, a.index, checkpoint.size), checkpoint.note,
                             a.duplicate) for a in appended]


class AuthorityLedger:
    """The data space's shared log at the authority. What comes back is checked before it is
    kept: the checkpoint's signature, each inclusion proof against it, and that the log only
    grew since the last checkpoint this node saw."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._seen: tuple[int, bytes] | None = None  # (size, root) of the newest checkpoint

    def _client(self) -> httpx.Client:
        from .auth import encode_credential

        credential = self.node.state(MEMBERSHIP_STATE)
        headers = {CREDENTIAL_HEADER: encode_credential(credential)} if credential else {}
        return httpx.Client(auth=SM2RequestAuth(self.node.key, extra_components=tuple(headers)),
                            headers=headers, verify=TLS,
                            timeout=self.node.settings.http_timeout_seconds)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.node.settings.authority_url}{path}"
        try:
            with self._client() as client:
                if body is None:
                    response = client.request(method, url)
                else:
                    response = client.request(method, url, content=canonical_json(body),
                                              headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise LedgerUnavailable("unreachable", f"{url}: {exc}") from None
        if response.status_code >= 500:
            raise LedgerUnavailable("server-error", f"{response.status_code} {response.text}")
        if response.status_code >= 400:
            raise LedgerError("refused", f"{response.status_code} {response.text[:300]}")
        return response.json()

    def submit(self, documents: Sequence[SignedDocument]) -> list[Evidence]:
        answer = self._call("POST", "/ledger/entries",
                            {"receipts": [d.to_json() for d in documents]})
        note = SignedNote.parse(answer["checkpoint"])
        origin = _origin(self.node.settings.authority_url or "")
        try:
            verify_note(note, {origin: self.node.authority_key}, origin=origin)
        except NoteInvalid as exc:
            raise LedgerError("bad-checkpoint", str(exc)) from None
        checkpoint = note.checkpoint()
        self._check_growth(checkpoint.size, checkpoint.root_hash)
        out = []
        for doc, entry in zip(documents, answer["entries"], strict=True):
            proof = [bytes.fromhex(h) for h in entry["inclusion"]]
            try:
                merkle.verify_inclusion(merkle.leaf_hash(leaf_bytes(doc)), int(entry["index"]),
                                        checkpoint.size, proof, checkpoint.root_hash)
            except ProofInvalid as exc:
                raise LedgerError("bad-inclusion", f"{entry['id']}: {exc}") from None
            out.append(Evidence(str(entry["id"]), doc.digest, int(entry["index"]),
                                checkpoint.size, proof, note.text(), bool(entry["duplicate"])))
        return out

    def _check_growth(self, size: int, root: bytes) -> None:
        seen = self._seen
        if seen is not None and size > seen[0]:
            answer = self._call("GET", f"/ledger/proof/consistency?old={seen[0]}&new={size}")
            try:
                merkle.verify_consistency(seen[0], size, seen[1], root,
                                          [bytes.fromhex(h) for h in answer["proof"]])
            except ProofInvalid as exc:
                raise LedgerError("inconsistent-log", str(exc)) from None
        elif seen is not None and (size < seen[0] or (size == seen[0] and root != seen[1])):
            raise LedgerError("inconsistent-log", f"size {size} after {seen[0]}")
        if seen is None or size >= seen[0]:
            self._seen = (size, root)


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc + "/ledger"


def make_ledger(node: Node) -> Ledger:
    choice = node.settings.ledger
    if choice == "auto":
        choice = "authority" if node.settings.authority_url else "local"
    if choice == "authority":
        if not node.settings.authority_url:
            raise ValueError("ledger = authority needs an authority_url")
        return AuthorityLedger(node)
    if choice == "evm":
        from .evm_ledger import EvmAnchoredLedger

        return EvmAnchoredLedger(node)
    return LocalLedger(node)


class WitnessPusher(Loop):
    """On the authority: sends each new checkpoint to every member (witness) with a
    consistency proof from the size that witness last cosigned, and stores the cosignatures.
    A witness that refuses is logged with its reason and asked again with the next checkpoint."""

    name = "witness pusher"
    # Checkpoints that follow each other within this many seconds go to the witnesses as one:
    # under load every append makes a checkpoint, and each push costs every member a
    # consistency check and a signature (~10 ms of a member's CPU per negotiation before).
    coalesce_seconds = 0.5

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node
        self._known: dict[str, int] = {}  # witness -> size it last cosigned
        self.refusals: dict[str, str] = {}  # witness -> its last refusal, for operators
        self._last_push = -math.inf  # time.monotonic() of the last push

    async def step(self) -> float:
        wait = self._last_push + self.coalesce_seconds - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._wake.clear()  # this push covers every append so far; later ones kick again
        self._last_push = time.monotonic()
        await self.push_once()
        return 30.0

    def _targets(self) -> tuple[LogCheckpoint | None, list[tuple[str, str]]]:
        with self.node.db.transaction() as session:
            checkpoint = self.node.log.checkpoint(session, self.node.clock()) \
                if self.node.log.size(session) else None
            members = [(m.participant_id, m.endpoint_url) for m in session.scalars(
                select(Member).where(Member.status == "approved"))
                if m.participant_id != self.node.authority_id]
            return checkpoint, members

    async def push_once(self) -> int:
        """Ask every witness to cosign the newest checkpoint; returns how many did."""
        checkpoint, members = await run_in_threadpool(self._targets)
        if checkpoint is None:
            return 0
        results = await asyncio.gather(*(self._push(pid, url, checkpoint)
                                         for pid, url in members))
        return sum(results)

    async def _push(self, pid: str, url: str, checkpoint: LogCheckpoint) -> bool:
        for _ in range(2):  # once more after learning the witness's size
            old = self._known.get(pid, 0)
            if old > checkpoint.size:
                old = 0
            proof = await run_in_threadpool(self._consistency, old, checkpoint.size)
            body = {"checkpoint": SignedNote.parse(checkpoint.note).text(), "oldSize": old,
                    "consistency": [h.hex() for h in proof], "logName": self.node.log.name}
            try:
                async with self._client() as client:
                    response = await client.post(
                        f"{url}/witness/add-checkpoint", content=canonical_json(body),
                        headers={"content-type": "application/json"})
            except httpx.HTTPError as exc:
                self.refusals[pid] = f"unreachable: {exc}"
                return False
            answer = response.json() if response.content else {}
            if response.status_code == 200:
                note = SignedNote.parse(answer["cosignature"])
                await run_in_threadpool(self._store, checkpoint.size, note)
                self._known[pid] = checkpoint.size
                self.refusals.pop(pid, None)
                return True
            self.refusals[pid] = f"{answer.get('error')}: {answer.get('detail')}"
            if answer.get("error") == "size-mismatch" and isinstance(answer.get("size"), int):
                self._known[pid] = answer["size"]
                continue
            log.warning("witness %s refused checkpoint %d: %s", pid, checkpoint.size,
                        self.refusals[pid])
            return False
        return False

    def _client(self) -> httpx.AsyncClient:
        from .client import signed_client

        return signed_client(self.node, self.node.state(MEMBERSHIP_STATE))

    def _consistency(self, old: int, new: int) -> list[bytes]:
        with self.node.db.read() as session:
            return self.node.log.consistency(session, old, new)

    def _store(self, size: int, note: SignedNote) -> None:
        with self.node.db.transaction() as session:
            self.node.log.add_cosignature(session, size, note)
