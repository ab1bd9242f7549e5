"""The ServerApp: runs on the consumer's SuperLink; pooled scale, then FedAvg.

Round 0 asks each SuperNode for its column moments (count, sums, sums of squares) so all
providers standardise with one pooled scale; then `num-server-rounds` rounds of FedAvg. If
`result-dir` is set, the per-round metrics (with the node ids that answered) go to
`result.json` and the final weights to `model.npz` there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from . import task
from ._grid import PollingGrid

app = ServerApp()


def _wait_for_nodes(grid: Grid, count: int, timeout: float, interval: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < count:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{len(nodes)} of {count} SuperNodes connected")
        time.sleep(interval)
    return nodes


def _pooled_scale(grid: PollingGrid, nodes: list[int]) -> tuple[task.Matrix, task.Matrix]:
    asks = [Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=node,
                    message_type=MessageType.QUERY) for node in nodes]
    replies = list(grid.send_and_receive(asks, timeout=600))
    parts = []
    for reply in replies:
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
        m = reply.content.metric_records["moments"]
        n = m["num-examples"]
        if not isinstance(n, int) or n < 1:
            raise RuntimeError(f"node {reply.metadata.src_node_id}: bad row count")
        parts.append((n, np.asarray(m["sum"], dtype=np.float64),
                      np.asarray(m["sumsq"], dtype=np.float64)))
    if len(parts) < len(nodes):
        raise RuntimeError(f"{len(parts)} of {len(nodes)} nodes sent their moments")
    return task.pooled_scale(parts)


def _records(table: dict[int, Any]) -> dict[str, dict[str, Any]]:
    return {str(r): dict(record) for r, record in sorted(table.items())}


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    out = str(cfg["result-dir"])
    polling = PollingGrid(grid, float(cfg["reply-poll-interval"]),
                          str(Path(out) / "progress.jsonl") if out else None)
    min_nodes = int(cfg["min-nodes"])
    fraction_evaluate = float(cfg["fraction-evaluate"])
    nodes = _wait_for_nodes(polling, min_nodes, timeout=300, interval=0.5)
    mean, std = _pooled_scale(polling, nodes)

    scale = ConfigRecord({"mean": mean.tolist(), "std": std.tolist()})
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=fraction_evaluate,
                      min_train_nodes=min_nodes, min_evaluate_nodes=min_nodes,
                      min_available_nodes=min_nodes)
    result = strategy.start(grid=polling,
                            initial_arrays=ArrayRecord([task.initial_weights(mean.shape[0])]),
                            num_rounds=int(cfg["num-server-rounds"]),
                            train_config=scale, evaluate_config=ConfigRecord(dict(scale)))

    if not out:
        return
    (w,) = result.arrays.to_numpy_ndarrays()
    summary = {
        "nodes": nodes,
        "train": _records(result.train_metrics_clientapp),
        "evaluate": _records(result.evaluate_metrics_clientapp),
        "replied": [[t, r, ids] for (t, r), ids in sorted(polling.replied.items())],
        "failed": [[t, r, ids] for (t, r), ids in sorted(polling.failed.items())],
        "times": [[t, r, list(span)] for (t, r), span in sorted(polling.times.items())],
    }
    target = Path(out)
    np.savez(target / "model.npz", weights=w, mean=mean, std=std)
    (target / "result.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
