"""The `evm` ledger backend: receipts anchored in the `ReceiptLedger` contract on an EVM chain.

Only fingerprints go on chain. A receipt stays what it is everywhere else in trustspace: an
SM2-signed document (GB/T 32918.2-2016), kept by the nodes and verified off-chain with
`trustspace.crypto`. The chain stores, as 32-byte values, its id, kind, agreement, SM3 digest
and submitter (`ChainEntry`); Merkle roots over many receipts (RFC 9162 §2.1.1 with SM3,
computed off-chain by `merkle.py`); and digests of signed log checkpoints. See
`ReceiptLedger.sol` for the rules the contract enforces: a receipt id or a batch root is written
once, checkpoint sizes per origin only grow, and only authorised accounts write.

The chain account's key is secp256k1, the chain's own key type. It authenticates transactions
to the chain (who may write), not receipts: their evidence is the SM2 signatures inside, checked
off-chain. Keep it apart from the node's SM2 identity keys.

Sending (measured on Anvil, see shared notes "evm-anvil"): transactions are signed locally with
a local nonce counter and a fixed gas limit per function, sent `window` at a time in JSON-RPC
batches and then waited for, polling every `poll` seconds (web3's default of 0.1 s would cost
~100 ms per receipt). `confirmations` follows the usual convention: a transaction in the
newest block has one confirmation, so a wait ends once the head reaches
``block_number + confirmations - 1`` (with 1, as soon as it is mined).

Failures:
- `LedgerUnavailable`: the node cannot be reached, answers with a JSON-RPC error, or a
  transaction is not confirmed in time. Nothing is known to be written: retry later, calling
  `find()` first, so that a receipt whose answer was lost is not sent again (sending it again
  is refused on chain anyway, with `ChainRejected("already-recorded")`).
- `ChainRejected`: a transaction reverted; `reason` names the contract's custom error.
- `LedgerError("no-contract")`: nothing is deployed at the address (configuration).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import HTTPProvider
from web3.types import RPCEndpoint

from .errors import ChainRejected, LedgerError, LedgerUnavailable

# py_ecc (which eth_account imports) raises the recursion limit to 100 000 for its pairing code,
# which we never call. At that limit the C JSON scanner overflows the stack on a deeply nested
# body (SIGSEGV, the whole node down) before Python's RecursionError can fire: put it back.
sys.setrecursionlimit(min(sys.getrecursionlimit(), 1000))

__all__ = [
    "BatchEvent",
    "ChainEntry",
    "ChainEvent",
    "ChainTx",
    "CheckpointEvent",
    "EvmLedger",
    "ReceiptEvent",
    "deploy",
]

# Gas limits, fixed so that sending needs no eth_estimateGas round trip: 1.6 to 2 times what
# each function used on Anvil 1.7.1 (record ~50k, recordBatch ~49k, anchor ~72k, authorise
# ~47k); tests/test_evm_ledger.py keeps a third of margin.
GAS: Final = {"record": 100_000, "recordBatch": 100_000, "anchor": 120_000,
              "authorise": 100_000, "revoke": 100_000}
_RPC_BATCH: Final = 250  # requests per JSON-RPC batch


@dataclass(frozen=True)
class ChainEntry:
    """One receipt as the contract records it: 32-byte values, `kind` a small number."""

    receipt_id: bytes
    kind: int
    agreement: bytes
    digest: bytes
    submitter: bytes

    def __post_init__(self) -> None:
        for name in ("receipt_id", "agreement", "digest", "submitter"):
            if len(getattr(self, name)) != 32:
                raise ValueError(f"ChainEntry.{name} must be 32 bytes")
        if not 0 <= self.kind <= 255:
            raise ValueError("ChainEntry.kind must fit in a uint8")


@dataclass(frozen=True)
class ChainTx:
    """A transaction: `block_number` is None until it is mined."""

    tx_hash: str
    block_number: int | None = None
    gas_used: int | None = None


@dataclass(frozen=True)
class ReceiptEvent:
    receipt_id: bytes
    kind: int
    agreement: bytes
    digest: bytes
    submitter: bytes
    sender: str
    tx: ChainTx
    log_index: int


@dataclass(frozen=True)
class BatchEvent:
    root: bytes
    count: int
    first_receipt_id: bytes
    last_receipt_id: bytes
    sender: str
    tx: ChainTx
    log_index: int


@dataclass(frozen=True)
class CheckpointEvent:
    origin: bytes
    size: int
    root_hash: bytes
    checkpoint_digest: bytes
    sender: str
    tx: ChainTx
    log_index: int


ChainEvent = ReceiptEvent | BatchEvent | CheckpointEvent


# --- the contract's ABI, from the committed artifact (scripts/compile-contract) -------------

@dataclass(frozen=True)
class _Item:
    name: str
    names: tuple[str, ...]
    types: tuple[str, ...]
    indexed: tuple[bool, ...] = ()
    outputs: tuple[str, ...] = ()

    @property
    def signature(self) -> bytes:
        return f"{self.name}({','.join(self.types)})".encode()


@dataclass(frozen=True)
class _Abi:
    bytecode: bytes
    functions: dict[str, _Item]
    errors: dict[bytes, _Item]  # by 4-byte selector
    events: dict[bytes, _Item]  # by topic 0


@cache
def _abi() -> _Abi:
    artifact = json.loads(resources.files(__package__).joinpath("ReceiptLedger.json")
                          .read_text(encoding="utf-8"))

    def item(entry: dict[str, Any]) -> _Item:
        inputs = entry.get("inputs", [])
        return _Item(entry["name"], tuple(i["name"] for i in inputs),
                     tuple(i["type"] for i in inputs),
                     tuple(bool(i.get("indexed")) for i in inputs),
                     tuple(o["type"] for o in entry.get("outputs", [])))

    functions, errors, events = {}, {}, {}
    for entry in artifact["abi"]:
        if entry["type"] == "function":
            functions[entry["name"]] = item(entry)
        elif entry["type"] == "error":
            e = item(entry)
            errors[keccak(e.signature)[:4]] = e
        elif entry["type"] == "event":
            e = item(entry)
            events[keccak(e.signature)] = e
    return _Abi(bytes.fromhex(artifact["bytecode"].removeprefix("0x")), functions, errors,
                events)


def _calldata(function: str, *args: Any) -> bytes:
    f = _abi().functions[function]
    return keccak(f.signature)[:4] + abi_encode(list(f.types), list(args))


def _topic(event: str) -> str:
    return "0x" + next(t for t, e in _abi().events.items() if e.name == event).hex()


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def _hex(value: Any) -> int:
    return int(value, 16)


# --- JSON-RPC over web3's HTTP provider --------------------------------------------------------

class _RpcError(Exception):
    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.code = error.get("code")
        self.message = str(error.get("message", ""))
        self.data = error.get("data")
        super().__init__(f"{method}: {self.message} ({self.code})")


class _Rpc:
    """Raw JSON-RPC, no middleware: results come back as the node sends them."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        # No retries inside the provider: the caller decides (LedgerUnavailable).
        self._provider = HTTPProvider(url, request_kwargs={"timeout": timeout},
                                      exception_retry_configuration=None)

    def call(self, method: str, *params: Any) -> Any:
        try:
            response = self._provider.make_request(RPCEndpoint(method), list(params))
        except (OSError, ValueError) as exc:  # requests' errors are OSErrors; ValueError: no JSON
            raise LedgerUnavailable("unreachable", f"{self.url}: {exc}") from exc
        if "error" in response:
            raise _RpcError(method, dict(response["error"]))
        return response.get("result")

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Results in order; a failed call's place holds its `_RpcError`."""
        results: list[Any] = []
        for start in range(0, len(calls), _RPC_BATCH):
            chunk = calls[start:start + _RPC_BATCH]
            try:
                responses = self._provider.make_batch_request(
                    [(RPCEndpoint(m), list(p)) for m, p in chunk])
            except (OSError, ValueError) as exc:
                raise LedgerUnavailable("unreachable", f"{self.url}: {exc}") from exc
            if not isinstance(responses, list):  # the whole batch was refused
                raise LedgerUnavailable("rpc-error", f"{self.url}: {responses.get('error')}")
            for (method, _), response in zip(chunk, responses, strict=True):
                error = response.get("error")
                results.append(_RpcError(method, dict(error)) if error
                               else response.get("result"))
        return results


def _unavailable(exc: _RpcError) -> LedgerUnavailable:
    return LedgerUnavailable("rpc-error", str(exc))


class _Account:
    """A secp256k1 chain account that signs and sends transactions with a local nonce."""

    def __init__(self, rpc: _Rpc, private_key_hex: str) -> None:
        self._rpc = rpc
        self._key = Account.from_key(private_key_hex)
        self.address: str = self._key.address
        self._chain_id: int | None = None
        self._nonce: int | None = None
        self._lock = threading.Lock()

    def send(self, to: str | None, calldatas: Sequence[bytes], gas: int) -> list[ChainTx]:
        """Sign one transaction per calldata with consecutive nonces and send them all."""
        with self._lock:
            try:
                return self._send(to, calldatas, gas)
            except (LedgerUnavailable, _RpcError):
                self._nonce = None  # some may have gone through: count again from the node
                raise

    def _send(self, to: str | None, calldatas: Sequence[bytes], gas: int) -> list[ChainTx]:
        asks: list[tuple[str, Sequence[Any]]] = [("eth_gasPrice", ()),
                                                  ("eth_maxPriorityFeePerGas", ())]
        if self._chain_id is None:
            asks.append(("eth_chainId", ()))
        if self._nonce is None:
            asks.append(("eth_getTransactionCount", (self.address, "pending")))
        answers = self._rpc.batch(asks)
        for answer in answers:
            if isinstance(answer, _RpcError):
                raise _unavailable(answer)
        gas_price, tip = _hex(answers[0]), _hex(answers[1])
        rest = iter(answers[2:])
        if self._chain_id is None:
            self._chain_id = _hex(next(rest))
        if self._nonce is None:
            self._nonce = _hex(next(rest))
        # Room for the base fee to double before the transactions are mined (EIP-1559).
        fees = {"maxFeePerGas": 2 * gas_price + tip, "maxPriorityFeePerGas": tip}
        signed = []
        for i, data in enumerate(calldatas):
            tx: dict[str, Any] = {"type": 2, "chainId": self._chain_id, "nonce": self._nonce + i,
                                  "gas": gas, "value": 0, "data": data, **fees}
            if to is not None:
                tx["to"] = to
            signed.append(self._key.sign_transaction(tx))
        answers = self._rpc.batch(
            [("eth_sendRawTransaction", ("0x" + s.raw_transaction.hex(),)) for s in signed])
        for answer in answers:
            if isinstance(answer, _RpcError):
                raise _unavailable(answer)
        self._nonce += len(signed)
        return [ChainTx("0x" + s.hash.hex()) for s in signed]

    def forget_nonce(self) -> None:
        with self._lock:
            self._nonce = None


def _wait(rpc: _Rpc, txs: Sequence[ChainTx], confirmations: int, poll: float,
          timeout: float) -> list[dict[str, Any]]:
    """Receipts of `txs` once each has `confirmations`; LedgerUnavailable on timeout.

    `txs` are one account's, in nonce order, so they are mined in that order: while the last
    is missing only the last is asked for, then all of them in one batch.
    """
    deadline = time.monotonic() + timeout
    receipts: list[dict[str, Any] | None] = [None] * len(txs)
    while True:
        missing = [i for i, r in enumerate(receipts) if r is None]
        if missing and rpc.call("eth_getTransactionReceipt", txs[missing[-1]].tx_hash):
            answers = rpc.batch([("eth_getTransactionReceipt", (txs[i].tx_hash,))
                                 for i in missing])
            for i, answer in zip(missing, answers, strict=True):
                if isinstance(answer, _RpcError):
                    raise _unavailable(answer)
                receipts[i] = answer
        if all(r is not None for r in receipts):
            done = [r for r in receipts if r is not None]
            if confirmations == 1:
                return done
            needed = max(_hex(r["blockNumber"]) for r in done) + confirmations - 1
            if _hex(rpc.call("eth_blockNumber")) >= needed:
                # Still where they were? A reorganisation may have moved them meanwhile.
                again = rpc.batch([("eth_getTransactionReceipt", (t.tx_hash,)) for t in txs])
                if all(isinstance(a, dict) and a["blockHash"] == r["blockHash"]
                       for a, r in zip(again, done, strict=True)):
                    return done
                receipts = [a if isinstance(a, dict) else None for a in again]
        if time.monotonic() > deadline:
            waiting = sum(r is None for r in receipts)
            raise LedgerUnavailable("timeout", f"{waiting} of {len(txs)} transactions not mined, "
                                    f"or not {confirmations} deep, after {timeout} s")
        time.sleep(poll)


def deploy(rpc_url: str, private_key_hex: str, *, timeout: float = 60.0,
           poll: float = 0.005) -> str:
    """Deploy `ReceiptLedger`, owned (and authorised) by the key's account; its address once
    the deployment is mined (one confirmation: wait for more before relying on it)."""
    rpc = _Rpc(rpc_url, timeout=10.0)
    account = _Account(rpc, private_key_hex)
    create = {"from": account.address, "data": "0x" + _abi().bytecode.hex()}
    try:
        gas = _hex(rpc.call("eth_estimateGas", create))
        (tx,) = account.send(None, [_abi().bytecode], gas + gas // 5)
        (receipt,) = _wait(rpc, [tx], 1, poll, timeout)
    except _RpcError as exc:
        raise _unavailable(exc) from exc
    if _hex(receipt["status"]) != 1:
        raise ChainRejected("reverted", "deploying ReceiptLedger", tx_hash=tx.tx_hash)
    return to_checksum_address(receipt["contractAddress"])


class EvmLedger:
    """A client of one deployed `ReceiptLedger`, writing with one chain account.

    Writes return once their transactions have `confirmations`; `submit` sends without
    waiting, for a caller that stores the hashes first and calls `wait` afterwards.

    The nonce is counted here, so one account should have one writing client at a time (give
    each worker its own authorised account). If another wrote meanwhile, the next send fails
    with LedgerUnavailable ("nonce too low"), and the one after counts again from the node.
    """

    def __init__(self, rpc_url: str, contract_address: str, private_key_hex: str, *,
                 confirmations: int = 1, poll: float = 0.005, timeout: float = 120.0,
                 rpc_timeout: float = 10.0, window: int = 256) -> None:
        if confirmations < 1:
            raise ValueError("confirmations counts the block holding the transaction: >= 1")
        self.contract_address = to_checksum_address(contract_address)
        self.confirmations = confirmations
        self.window = window
        self.poll = poll
        self.timeout = timeout
        self._rpc = _Rpc(rpc_url, rpc_timeout)
        self._account = _Account(self._rpc, private_key_hex)
        self._checked = False

    @property
    def address(self) -> str:
        """The chain account this client writes with."""
        return self._account.address

    # -- writing ------------------------------------------------------------------------------

    def submit(self, entries: Sequence[ChainEntry]) -> list[ChainTx]:
        """Send one `record` transaction per entry, all at once; do not wait."""
        self._check_contract()
        calls = [_calldata("record", e.receipt_id, e.kind, e.agreement, e.digest, e.submitter)
                 for e in entries]
        return self._account.send(self.contract_address, calls, GAS["record"])

    def record(self, entries: Sequence[ChainEntry]) -> list[ChainTx]:
        """Record each receipt in a transaction of its own, `window` at a time: a window is
        sent at once and waited for until mined, then the next; `confirmations` at the end.

        Nodes cap one account's pending transactions (geth guarantees 16 and shares 5,120
        among all accounts), and Anvil 1.7.1's automine sometimes stops mining for good when
        ~2,000 arrive at once: hence the window.

        If any reverted, raises the first one's `ChainRejected` once none is in flight; its
        detail names the entry's position. Later windows are not sent. Earlier entries may
        have been recorded: `find` tells.
        """
        txs: list[ChainTx] = []
        for start in range(0, len(entries), self.window):
            sent = self.submit(entries[start:start + self.window])
            txs.extend(self._wait_all(sent, confirmations=1, first=start, total=len(entries)))
        if self.confirmations == 1 or not txs:
            return txs
        return self._wait_all(txs)

    def record_batch(self, root: bytes, count: int, first_receipt_id: bytes,
                     last_receipt_id: bytes) -> ChainTx:
        """Anchor a Merkle root (RFC 9162 §2.1.1, SM3) over `count` receipts."""
        return self._write("recordBatch", root, count, first_receipt_id, last_receipt_id)

    def anchor(self, origin: bytes, size: int, root: bytes, checkpoint_digest: bytes) -> ChainTx:
        """Anchor a signed checkpoint of log `origin` (its size, root hash and digest)."""
        return self._write("anchor", origin, size, root, checkpoint_digest)

    def authorise(self, account: str) -> ChainTx:
        """Let `account` write (only the owner, the deployer's account, may)."""
        return self._write("authorise", to_checksum_address(account))

    def revoke(self, account: str) -> ChainTx:
        return self._write("revoke", to_checksum_address(account))

    def wait(self, tx: ChainTx) -> ChainTx:
        """`tx` once it has `confirmations`; ChainRejected if it reverted."""
        return self._wait_all([tx])[0]

    def _write(self, function: str, *args: Any) -> ChainTx:
        self._check_contract()
        txs = self._account.send(self.contract_address, [_calldata(function, *args)],
                                 GAS[function])
        return self._wait_all(txs)[0]

    def _wait_all(self, txs: Sequence[ChainTx], *, confirmations: int | None = None,
                  first: int = 0, total: int | None = None) -> list[ChainTx]:
        depth = self.confirmations if confirmations is None else confirmations
        try:
            receipts = _wait(self._rpc, txs, depth, self.poll, self.timeout)
        except _RpcError as exc:
            self._account.forget_nonce()
            raise _unavailable(exc) from exc
        except LedgerUnavailable:
            self._account.forget_nonce()  # a node that restarted may have dropped them
            raise
        for i, receipt in enumerate(receipts):
            if _hex(receipt["status"]) != 1:
                raise self._explain(receipt, f"transaction {first + i + 1} of "
                                             f"{total or len(receipts)}")
        return [ChainTx(r["transactionHash"], _hex(r["blockNumber"]), _hex(r["gasUsed"]))
                for r in receipts]

    def _explain(self, receipt: dict[str, Any], where: str) -> ChainRejected:
        """Why a transaction reverted: replay it at its block and decode the custom error."""
        tx_hash = receipt["transactionHash"]
        try:
            sent = self._rpc.call("eth_getTransactionByHash", tx_hash)
            if _hex(receipt["gasUsed"]) >= _hex(sent["gas"]):
                return ChainRejected("out-of-gas", where, tx_hash=tx_hash)
            call = {"from": sent["from"], "to": sent["to"], "data": sent["input"],
                    "gas": sent["gas"]}
            self._rpc.call("eth_call", call, receipt["blockNumber"])
        except _RpcError as exc:
            data = exc.data if isinstance(exc.data, str) else ""
            raw = bytes.fromhex(data.removeprefix("0x"))
            error = _abi().errors.get(raw[:4])
            if error is None:
                return ChainRejected("reverted", f"{where}: {exc.message}", tx_hash=tx_hash)
            values = abi_decode(list(error.types), raw[4:])
            fields = dict(zip(error.names, values, strict=True))
            shown = ", ".join(f"{k}={v.hex() if isinstance(v, bytes) else v}"
                              for k, v in fields.items())
            return ChainRejected(_kebab(error.name), f"{where}: {error.name}({shown})",
                                 tx_hash=tx_hash, fields=fields)
        return ChainRejected("reverted", f"{where}: replaying it at its block succeeds",
                             tx_hash=tx_hash)

    # -- reading ------------------------------------------------------------------------------

    def find(self, receipt_id: bytes) -> ChainTx | None:
        """The transaction that recorded `receipt_id`, or None if it is not on chain.

        Meant for a restart: what was sent before a crash or a lost answer shows up here. The
        transaction may not have `confirmations` yet: `wait` on it to know.
        """
        block = self._view_uint("recordedAt", receipt_id)
        if block == 0:
            return None
        logs = self._logs(block, block, [_topic("Receipt"), "0x" + receipt_id.hex()])
        if not logs:
            raise LedgerError("log-missing", f"receipt {receipt_id.hex()} recorded in block "
                              f"{block} but the node returns no Receipt log for it")
        return ChainTx(logs[0]["transactionHash"], block)

    def find_batch(self, root: bytes) -> ChainTx | None:
        """The transaction that anchored batch `root`, or None."""
        block = self._view_uint("batchAt", root)
        if block == 0:
            return None
        logs = self._logs(block, block, [_topic("Batch"), "0x" + root.hex()])
        if not logs:
            raise LedgerError("log-missing", f"batch {root.hex()} anchored in block {block} "
                              "but the node returns no Batch log for it")
        return ChainTx(logs[0]["transactionHash"], block)

    def checkpoint_of(self, origin: bytes) -> tuple[int, bytes]:
        """Size and root hash of the last checkpoint anchored for `origin` ((0, zeros): none)."""
        size, root = self._view("checkpointOf", origin)
        return int(size), bytes(root)

    def is_authorised(self, account: str) -> bool:
        return bool(self._view("authorised", to_checksum_address(account))[0])

    def head(self) -> int:
        """The newest block number."""
        return _hex(self._call("eth_blockNumber"))

    def events(self, from_block: int = 0, to_block: int | None = None, *,
               step: int = 10_000) -> list[ChainEvent]:
        """Receipt, Batch and Checkpoint events in [from_block, to_block] (default: the head),
        in chain order, asked for `step` blocks at a time (nodes cap getLogs ranges)."""
        last = self.head() if to_block is None else to_block
        topics = [[_topic("Receipt"), _topic("Batch"), _topic("Checkpoint")]]
        found: list[ChainEvent] = []
        for start in range(from_block, last + 1, step):
            found.extend(_event(log) for log in self._logs(start, min(start + step - 1, last),
                                                           topics))
        return found

    def _logs(self, first: int, last: int, topics: list[Any]) -> list[dict[str, Any]]:
        logs = self._call("eth_getLogs", {"address": self.contract_address,
                                          "fromBlock": hex(first), "toBlock": hex(last),
                                          "topics": topics})
        return [log for log in logs if not log.get("removed")]

    def _view(self, function: str, *args: Any) -> tuple[Any, ...]:
        self._check_contract()
        f = _abi().functions[function]
        raw = self._call("eth_call", {"to": self.contract_address,
                                      "data": "0x" + _calldata(function, *args).hex()},
                         "latest")
        return tuple(abi_decode(list(f.outputs), bytes.fromhex(raw.removeprefix("0x"))))

    def _view_uint(self, function: str, *args: Any) -> int:
        return int(self._view(function, *args)[0])

    def _call(self, method: str, *params: Any) -> Any:
        try:
            return self._rpc.call(method, *params)
        except _RpcError as exc:
            raise _unavailable(exc) from exc

    def _check_contract(self) -> None:
        if self._checked:
            return
        if self._call("eth_getCode", self.contract_address, "latest") in (None, "0x", "0x0"):
            raise LedgerError("no-contract", f"no contract at {self.contract_address} on "
                              f"{self._rpc.url}")
        self._checked = True


def _event(log: dict[str, Any]) -> ChainEvent:
    event = _abi().events[bytes.fromhex(log["topics"][0].removeprefix("0x"))]
    topics = iter(log["topics"][1:])
    data = iter(abi_decode([t for t, i in zip(event.types, event.indexed, strict=True) if not i],
                           bytes.fromhex(log["data"].removeprefix("0x"))))
    values: dict[str, Any] = {}
    for name, kind, indexed in zip(event.names, event.types, event.indexed, strict=True):
        if indexed:  # every indexed argument here is a bytes32: the topic is the value
            values[name] = bytes.fromhex(next(topics).removeprefix("0x"))
        else:
            value = next(data)
            values[name] = to_checksum_address(value) if kind == "address" else value
    tx = ChainTx(log["transactionHash"], _hex(log["blockNumber"]))
    index = _hex(log["logIndex"])
    if event.name == "Receipt":
        return ReceiptEvent(values["receiptId"], values["kind"], values["agreement"],
                            values["digest"], values["submitter"], values["sender"], tx, index)
    if event.name == "Batch":
        return BatchEvent(values["root"], values["count"], values["firstReceiptId"],
                          values["lastReceiptId"], values["sender"], tx, index)
    return CheckpointEvent(values["origin"], values["size"], values["rootHash"],
                           values["checkpointDigest"], values["sender"], tx, index)
