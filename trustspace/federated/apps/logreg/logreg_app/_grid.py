"""A Grid that polls for replies at a chosen interval and remembers who replied.

Flower's HTTP grid sleeps a fixed 3 s between two polls for replies (flwr 1.42,
`superlink/grid/http_grid.py`); everything else is delegated unchanged. The record of which
SuperNodes answered which round is what a delivery receipt needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class PollingGrid(Grid):
    def __init__(self, inner: Grid, poll_interval: float, progress: str | None = None) -> None:
        if not 0.01 <= poll_interval <= 60:
            raise ValueError("poll interval must be within [0.01, 60] seconds")
        self._inner = inner
        self._interval = poll_interval
        self._progress = progress  # a file to append one JSON line to per exchange, or None
        # (message type, server round or -1) -> node ids that replied / that replied an error
        self.replied: dict[tuple[str, int], list[int]] = {}
        self.failed: dict[tuple[str, int], list[int]] = {}
        # same key -> (wall-clock time the messages went out, time the last reply came)
        self.times: dict[tuple[str, int], tuple[float, float]] = {}

    def set_run(self, run: Run) -> None:
        self._inner.set_run(run)

    @property
    def run(self) -> Run:
        return self._inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self._inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._inner.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self._inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        key = _key(messages[0]) if messages else ("none", -1)
        sent = time.time()
        ids = list(self.push_messages(messages))
        pending = set(ids)
        # An error reply for a node that went away comes from the SuperLink, not the node: the
        # node it was for is the original message's destination.
        to = {mid: m.metadata.dst_node_id for mid, m in zip(ids, messages, strict=True)}
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self._interval)
        self.times[key] = (sent, time.time())
        for reply in replies:
            table = self.failed if reply.has_error() else self.replied
            node = to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            table.setdefault(key, []).append(node)
        if self._progress and messages:  # (FedAvg asks for nothing when it skips evaluation)
            self._report(self._progress, key, replies)
        return replies

    def _report(self, path: str, key: tuple[str, int], replies: list[Message]) -> None:
        """One line per exchange, as it ends, for whoever follows the run (the consumer's CLI):
        who answered, who failed, how long it took, the replies' metrics averaged by
        `num-examples` (the metrics FedAvg aggregates; per-node values are not written)."""
        sums: dict[str, float] = {}
        weight = 0.0
        for reply in replies:
            if reply.has_error():
                continue
            for record in reply.content.metric_records.values():
                n = record.get("num-examples")
                if not isinstance(n, int) or n < 1:
                    continue
                weight += n
                for name, value in record.items():
                    if name != "num-examples" and isinstance(value, int | float):
                        sums[name] = sums.get(name, 0.0) + n * float(value)
        sent, ended = self.times[key]
        line = {"type": key[0], "round": key[1], "replied": self.replied.get(key, []),
                "failed": self.failed.get(key, []), "seconds": ended - sent,
                "metrics": {k: v / weight for k, v in sums.items()} if weight else {},
                "digests": _digests(replies)}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def _key(message: Message) -> tuple[str, int]:
    config = message.content.config_records.get("config")
    server_round = config.get("server-round") if config is not None else None
    return (message.metadata.message_type,
            server_round if isinstance(server_round, int) else -1)


def _digests(replies: list[Message]) -> dict[str, str]:
    """Node id -> SM3 digest of the reply's content, as the providers' receipts name them
    (`trustspace.federated.update_digest`), so that the consumer can check those receipts
    against what it received. Empty where trustspace is not installed beside the app."""
    try:
        from trustspace.federated.update_digest import content_digest
    except ImportError:
        return {}
    return {str(r.metadata.src_node_id): content_digest(r.content)
            for r in replies if not r.has_error()}
