"""Jobs on the wire: Dataspace Protocol 2025-1 transfer process messages with trustspace's
compute format. A job is a transfer process whose "data" is the released result of code run next
to the provider's data; the request carries the consumer-signed job request (`JOB_REQUEST_TYPE`:
agreement, mode, code digest, parameters digest) and, beside it, the code bundle itself.

States (DSP 2025-1 transfer process): REQUESTED -> STARTED -> COMPLETED, SUSPENDED while the
provider pauses it, TERMINATED with a code and reason from any non-final state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trustspace.registry.dsp import DSP_CONTEXT, TS_CONTEXT

JOB_REQUEST_TYPE = "trustspace.job-request"
FORMAT_PREFIX = "ts:compute+"  # + the mode: ts:compute+sandbox
JOB_REQUEST = "ts:jobRequest"  # the consumer-signed job request document
CODE = "ts:code"  # base64url of the code bundle (a zip archive)
PARAMETERS = "ts:parameters"  # the job's parameters (their digest is in the job request)
RESULT = "ts:result"  # the sealed result, on completion
RECEIPT = "ts:receipt"  # the delivery or refusal receipt id, on completion or termination
SUMMARY = "ts:federatedSummary"  # a federated run's rounds, from the consumer


class TransferState(enum.StrEnum):
    REQUESTED = "REQUESTED"
    STARTED = "STARTED"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    TERMINATED = "TERMINATED"

    @property
    def final(self) -> bool:
        return self in (TransferState.COMPLETED, TransferState.TERMINATED)


_NEXT: dict[tuple[TransferState, str], TransferState] = {
    (TransferState.REQUESTED, "start"): TransferState.STARTED,
    (TransferState.SUSPENDED, "start"): TransferState.STARTED,
    (TransferState.STARTED, "suspend"): TransferState.SUSPENDED,
    (TransferState.STARTED, "complete"): TransferState.COMPLETED,
}


class TransferInvalid(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status, self.code, self.detail = status, code, detail
        super().__init__(f"{code}: {detail}")


def next_state(state: TransferState, event: str) -> TransferState:
    """The state after `event` (start, suspend, complete, terminate), or TransferInvalid."""
    if event == "terminate" and not state.final:
        return TransferState.TERMINATED
    after = _NEXT.get((state, event))
    if after is None:
        raise TransferInvalid(409, "illegal-transition", f"cannot {event} a {state} transfer")
    return after


def _message(kind: str, **fields: Any) -> dict[str, Any]:
    return {"@context": [DSP_CONTEXT, TS_CONTEXT], "@type": kind,
            **{k: v for k, v in fields.items() if v is not None}}


def request(consumer_pid: str, agreement_id: str, mode: str, callback: str,
            job_request: Mapping[str, Any], code_b64: str,
            parameters: Mapping[str, Any]) -> dict[str, Any]:
    return _message("TransferRequestMessage", consumerPid=consumer_pid,
                    agreementId=agreement_id, format=FORMAT_PREFIX + mode,
                    callbackAddress=callback, **{JOB_REQUEST: dict(job_request), CODE: code_b64,
                                                 PARAMETERS: dict(parameters)})


def process(provider_pid: str | None, consumer_pid: str | None,
            state: TransferState) -> dict[str, Any]:
    return _message("TransferProcess", providerPid=provider_pid, consumerPid=consumer_pid,
                    state=state.value)


def start(provider_pid: str, consumer_pid: str) -> dict[str, Any]:
    return _message("TransferStartMessage", providerPid=provider_pid, consumerPid=consumer_pid)


def completion(provider_pid: str, consumer_pid: str, result: Mapping[str, Any],
               receipt_id: str) -> dict[str, Any]:
    return _message("TransferCompletionMessage", providerPid=provider_pid,
                    consumerPid=consumer_pid, **{RESULT: dict(result), RECEIPT: receipt_id})


def run_ended(provider_pid: str, consumer_pid: str, summary: Mapping[str, Any]
              ) -> dict[str, Any]:
    """From the consumer of a federated job: its training run ended (a completion message the
    provider answers by completing the job with its delivery receipt)."""
    return _message("TransferCompletionMessage", providerPid=provider_pid,
                    consumerPid=consumer_pid, **{SUMMARY: dict(summary)})


def termination(provider_pid: str | None, consumer_pid: str, code: str, reason: Sequence[str],
                receipt_id: str | None = None) -> dict[str, Any]:
    return _message("TransferTerminationMessage", providerPid=provider_pid,
                    consumerPid=consumer_pid, code=code, reason=list(reason),
                    **({RECEIPT: receipt_id} if receipt_id else {}))


def error(provider_pid: str | None, consumer_pid: str | None, code: str,
          reason: Sequence[str], receipt_id: str | None = None) -> dict[str, Any]:
    return _message("TransferError", providerPid=provider_pid, consumerPid=consumer_pid,
                    code=code, reason=list(reason), **({RECEIPT: receipt_id} if receipt_id
                                                       else {}))


@dataclass(frozen=True)
class Parsed:
    kind: str
    provider_pid: str | None
    consumer_pid: str | None
    body: Mapping[str, Any]

    def text(self, key: str) -> str:
        value = self.body.get(key)
        if not isinstance(value, str) or not value:
            raise TransferInvalid(400, "malformed", f"{key} must be a non-empty string")
        return value

    def object(self, key: str) -> dict[str, Any]:
        value = self.body.get(key)
        if not isinstance(value, dict):
            raise TransferInvalid(400, "malformed", f"{key} must be an object")
        return value


_KINDS = {"TransferRequestMessage", "TransferStartMessage", "TransferCompletionMessage",
          "TransferTerminationMessage", "TransferSuspensionMessage"}


def parse(obj: object, expected: str) -> Parsed:
    if not isinstance(obj, dict):
        raise TransferInvalid(400, "malformed", "a transfer message is a JSON object")
    kind = obj.get("@type")
    if kind not in _KINDS or kind != expected:
        raise TransferInvalid(400, "malformed", f"expected a {expected}, got {kind!r}")
    context = obj.get("@context")
    if not isinstance(context, list) or DSP_CONTEXT not in context:
        raise TransferInvalid(400, "malformed", f"@context must include {DSP_CONTEXT}")
    pids = {k: obj.get(k) for k in ("providerPid", "consumerPid")}
    for key, value in pids.items():
        if value is not None and not isinstance(value, str):
            raise TransferInvalid(400, "malformed", f"{key} must be a string")
    if kind != "TransferRequestMessage" and not (pids["providerPid"] and pids["consumerPid"]):
        raise TransferInvalid(400, "malformed", "providerPid and consumerPid are required")
    if kind == "TransferRequestMessage" and not pids["consumerPid"]:
        raise TransferInvalid(400, "malformed", "consumerPid is required")
    return Parsed(str(kind), pids["providerPid"], pids["consumerPid"], obj)
