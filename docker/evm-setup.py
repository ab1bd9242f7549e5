#!/usr/bin/env python3
"""One-shot set-up of the `evm` profile of docker/compose.yaml: deploy the ReceiptLedger
contract with the owner's chain key, authorise each writer's account, and write the contract's
address to a file the nodes' entry point reads (TS_EVM_CONTRACT_FILE).

Idempotent: when the file already names a contract that has code on the chain, only the
authorisations are checked (and added where missing). Settings come from the environment:
TS_EVM_RPC_URL, TS_EVM_OWNER_KEY (hex), TS_EVM_WRITER_KEYS (comma-separated hex keys of the
nodes that write), TS_EVM_CONTRACT_FILE."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
from eth_account import Account

from trustspace.ledger.errors import LedgerError
from trustspace.ledger.evm import EvmLedger, deploy


def _has_code(rpc_url: str, address: str) -> bool:
    answer = httpx.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_getCode",
                                       "params": [address, "latest"]}, timeout=10).json()
    return str(answer.get("result", "0x")) not in ("0x", "0x0", "")


def main() -> int:
    rpc_url = os.environ["TS_EVM_RPC_URL"]
    owner_key = os.environ["TS_EVM_OWNER_KEY"]
    writers = [k.strip() for k in os.environ.get("TS_EVM_WRITER_KEYS", "").split(",")
               if k.strip()]
    out = Path(os.environ["TS_EVM_CONTRACT_FILE"])
    deadline = time.monotonic() + float(os.environ.get("TS_EVM_WAIT", "60"))
    while True:  # the chain may still be starting
        try:
            address = out.read_text().strip() if out.is_file() else ""
            if not (address and _has_code(rpc_url, address)):
                address = deploy(rpc_url, owner_key)
                print(f"deployed ReceiptLedger at {address}")
            ledger = EvmLedger(rpc_url, address, owner_key)
            for key in writers:
                account = Account.from_key(key).address
                if not ledger.is_authorised(account):
                    ledger.wait(ledger.authorise(account))
                    print(f"authorised {account}")
            break
        except (LedgerError, OSError, httpx.HTTPError) as exc:
            if time.monotonic() > deadline:
                print(f"evm-setup: {exc}", file=sys.stderr)
                return 1
            time.sleep(1)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(address + "\n")
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
