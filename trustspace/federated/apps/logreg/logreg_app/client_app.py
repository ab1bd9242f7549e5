"""The ClientApp: runs on a provider's SuperNode and reads that provider's file, nothing else.

The file is the one the provider's node config names (`data-path`); the consumer's messages
carry only weights, the standardisation scale and the round number.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import task

app = ClientApp()


def _data(context: Context) -> tuple[task.Matrix, task.Matrix]:
    path = context.node_config.get("data-path")
    if not isinstance(path, str) or not path:
        raise ValueError("this SuperNode's node config names no data-path")
    return task.load_csv(path)


def _scaled(msg: Message, context: Context) -> tuple[task.Matrix, task.Matrix]:
    x, y = _data(context)
    config = msg.content.config_records["config"]
    mean = np.asarray(config["mean"], dtype=np.float64)
    std = np.asarray(config["std"], dtype=np.float64)
    if mean.shape != (x.shape[1],) or std.shape != (x.shape[1],):
        raise ValueError("the scale does not match this provider's columns")
    return task.standardise(x, mean, std), y


def _weights(msg: Message) -> task.Matrix:
    (w,) = msg.content.array_records["arrays"].to_numpy_ndarrays()
    return np.asarray(w, dtype=np.float64)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Row count, column sums and sums of squares, for the pooled standardisation."""
    x, _ = _data(context)
    n, sums, squares = task.moments(x)
    record = MetricRecord({"num-examples": n, "sum": sums.tolist(),
                           "sumsq": squares.tolist()})
    return Message(RecordDict({"moments": record}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    x, y = _scaled(msg, context)
    run = context.run_config
    w = task.train(_weights(msg), x, y, int(run["local-epochs"]),
                   float(run["learning-rate"]), float(run["l2"]))
    loss, accuracy = task.evaluate(w, x, y)
    metrics = MetricRecord({"train-loss": loss, "train-accuracy": accuracy,
                            "num-examples": x.shape[0]})
    return Message(RecordDict({"arrays": ArrayRecord([w]), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    x, y = _scaled(msg, context)
    loss, accuracy = task.evaluate(_weights(msg), x, y)
    metrics = MetricRecord({"eval-loss": loss, "eval-accuracy": accuracy,
                            "num-examples": x.shape[0]})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
