"""federated: training across providers with Flower's Deployment Engine, data staying home.

- `policy`: `FederatedPolicy`, `FederatedRequest`, `check_request` (raises `FederatedRefused`);
- `app_digest`: the SM3 digest of a Flower app directory, what a provider approves;
- `keys`: SuperNode keys (OpenSSH ECDSA P-384) and their SM2-signed binding to a provider;
- `deployment`: a SuperLink and SuperNodes as real processes on loopback, `flwr run`;
- `clientapp_sandbox`: each ClientApp in the bubblewrap sandbox (`sandboxed=True`);
- `apps/logreg`: the example Flower app (NumPy logistic regression, FedAvg).

docs/federated.md says what runs, how fast, and what is still missing.
"""

from pathlib import Path

from .app_digest import AppInvalid, app_digest
from .deployment import (
    Deployment,
    FederatedResult,
    FlowerError,
    Intervals,
    Progress,
    RoundReport,
    SuperNode,
)
from .keys import (
    BINDING_TYPE,
    BindingInvalid,
    BindingReason,
    KeyBinding,
    SuperNodeKey,
    bind_supernode_key,
    verify_binding,
)
from .policy import (
    DifferentialPrivacy,
    DpRequirement,
    FederatedPolicy,
    FederatedRefused,
    FederatedRequest,
    RefusalReason,
    check_request,
)

#: The example app shipped with trustspace: `flwr run`-able directory.
LOGREG_APP = Path(__file__).with_name("apps") / "logreg"

__all__ = [
    "BINDING_TYPE",
    "AppInvalid",
    "BindingInvalid",
    "BindingReason",
    "Deployment",
    "DifferentialPrivacy",
    "DpRequirement",
    "FederatedPolicy",
    "FederatedRefused",
    "FederatedRequest",
    "FederatedResult",
    "FlowerError",
    "Intervals",
    "Progress",
    "KeyBinding",
    "LOGREG_APP",
    "RefusalReason",
    "RoundReport",
    "SuperNode",
    "SuperNodeKey",
    "bind_supernode_key",
    "app_digest",
    "check_request",
    "verify_binding",
]

