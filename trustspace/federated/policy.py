"""What a provider accepts of a federated job, and the pure check of a request against it.

`check_request(policy, request)` returns nothing or raises `FederatedRefused(reason, detail)`
with a machine-readable `RefusalReason`; the checks run in a fixed order and the first failure
is reported. Fails closed: a policy without approved apps approves none; a request with a
nonsensical number (rounds < 1, NaN noise) is refused as malformed, never passed.

Differential privacy is stated as Flower's Message-API DP takes it (`clipping_norm`,
`noise_multiplier`; docs/federated.md). The guarantee (epsilon for a given delta) is set by the
noise multiplier, the noise's standard deviation divided by the clipping norm, and by the
number of rounds; the clipping norm bounds how far one update can move the model. So the
policy asks for at least a noise multiplier and, optionally, at most a clipping norm.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field

FEDERATED = "federated"
_DIGEST = re.compile(r"sm3:[0-9a-f]{64}")


class RefusalReason(enum.StrEnum):
    MALFORMED = "request-malformed"
    MODE_NOT_ALLOWED = "mode-not-allowed"
    APP_NOT_APPROVED = "app-not-approved"
    TOO_MANY_ROUNDS = "too-many-rounds"
    TOO_FEW_CLIENTS = "too-few-clients"
    DP_MISSING = "dp-missing"
    DP_TOO_WEAK = "dp-too-weak"
    SECAGG_MISSING = "secagg-missing"


class FederatedRefused(Exception):
    """A provider refuses a federated job; `reason` is machine-readable, `detail` for people."""

    def __init__(self, reason: RefusalReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


@dataclass(frozen=True)
class DifferentialPrivacy:
    """DP as a request declares it: each update clipped to `clipping_norm` (L2), Gaussian
    noise of standard deviation `noise_multiplier * clipping_norm` added."""

    clipping_norm: float
    noise_multiplier: float


@dataclass(frozen=True)
class DpRequirement:
    min_noise_multiplier: float
    max_clipping_norm: float | None = None


@dataclass(frozen=True)
class FederatedPolicy:
    """A provider's limits for federated jobs on one product (one agreement)."""

    allowed_modes: frozenset[str] = frozenset({FEDERATED})
    max_rounds: int = 10
    min_clients: int = 2
    require_dp: DpRequirement | None = None
    require_secagg: bool = False
    approved_apps: frozenset[str] = field(default_factory=frozenset)  # "sm3:<hex>" digests


@dataclass(frozen=True)
class FederatedRequest:
    """What the consumer asks: the app (by digest), the rounds, the strategy's minimum number
    of clients per round, and the privacy measures it will apply."""

    app_digest: str
    rounds: int
    min_clients: int
    mode: str = FEDERATED
    dp: DifferentialPrivacy | None = None
    secagg: bool = False


def _positive(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _check_shape(request: FederatedRequest) -> None:
    if not isinstance(request.rounds, int) or isinstance(request.rounds, bool) \
            or request.rounds < 1:
        raise FederatedRefused(RefusalReason.MALFORMED, f"rounds {request.rounds!r}")
    if not isinstance(request.min_clients, int) or isinstance(request.min_clients, bool) \
            or request.min_clients < 1:
        raise FederatedRefused(RefusalReason.MALFORMED, f"min_clients {request.min_clients!r}")
    if not isinstance(request.app_digest, str) or not _DIGEST.fullmatch(request.app_digest):
        raise FederatedRefused(RefusalReason.MALFORMED, "app_digest must be sm3:<64 hex>")
    if request.dp is not None and not (_positive(request.dp.clipping_norm)
                                       and _positive(request.dp.noise_multiplier)):
        raise FederatedRefused(RefusalReason.MALFORMED,
                               "clipping norm and noise multiplier must be finite and > 0")


def check_request(policy: FederatedPolicy, request: FederatedRequest) -> None:
    """Raise `FederatedRefused` naming the first rule `request` breaks; return if none."""
    _check_shape(request)
    if request.mode != FEDERATED or request.mode not in policy.allowed_modes:
        raise FederatedRefused(RefusalReason.MODE_NOT_ALLOWED,
                               f"mode {request.mode!r}; allowed {sorted(policy.allowed_modes)}")
    if request.app_digest not in policy.approved_apps:
        raise FederatedRefused(RefusalReason.APP_NOT_APPROVED,
                               f"app {request.app_digest} is not approved by the provider")
    if request.rounds > policy.max_rounds:
        raise FederatedRefused(RefusalReason.TOO_MANY_ROUNDS,
                               f"{request.rounds} rounds asked, at most {policy.max_rounds}")
    if request.min_clients < policy.min_clients:
        raise FederatedRefused(RefusalReason.TOO_FEW_CLIENTS,
                               f"rounds may run with {request.min_clients} clients, "
                               f"the provider needs at least {policy.min_clients}")
    need = policy.require_dp
    if need is not None:
        if request.dp is None:
            raise FederatedRefused(RefusalReason.DP_MISSING,
                                   "the provider requires differential privacy")
        if request.dp.noise_multiplier < need.min_noise_multiplier:
            raise FederatedRefused(RefusalReason.DP_TOO_WEAK,
                                   f"noise multiplier {request.dp.noise_multiplier} < "
                                   f"{need.min_noise_multiplier}")
        if need.max_clipping_norm is not None \
                and request.dp.clipping_norm > need.max_clipping_norm:
            raise FederatedRefused(RefusalReason.DP_TOO_WEAK,
                                   f"clipping norm {request.dp.clipping_norm} > "
                                   f"{need.max_clipping_norm}")
    if policy.require_secagg and not request.secagg:
        raise FederatedRefused(RefusalReason.SECAGG_MISSING,
                               "the provider requires secure aggregation (SecAgg+)")
