"""The model-release entry (docs/federated.md, "Releasing the model"): runs in the provider's
sandbox after a run, never on the consumer's side. The final model is /data/model.npz (as the
ServerApp saved it: weights, mean, std); every other dataset (the provider's training rows,
``members``, and holdout rows, ``nonmembers``) gets its class probabilities, rows x [P(0),
P(1)], written as ``<name>.npy`` through the job API. The provider's node reads them and runs
the membership-inference check; they never leave the provider.
"""

from __future__ import annotations

import io

import numpy as np

from trustspace.sandbox import api

from . import task


def main() -> None:
    with np.load(api.path("model"), allow_pickle=False) as npz:
        weights, mean, std = npz["weights"], npz["mean"], npz["std"]
    for name in api.datasets():
        if name == "model":
            continue
        x, _ = task.load_csv(api.path(name))
        p = task.predict_proba(np.asarray(weights, dtype=np.float64),
                               task.standardise(x, mean, std))
        buffer = io.BytesIO()
        np.save(buffer, np.column_stack([1.0 - p, p]), allow_pickle=False)
        api.file(f"{name}.npy", buffer.getvalue())


if __name__ == "__main__":
    main()
