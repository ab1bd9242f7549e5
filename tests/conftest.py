from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from trustspace.crypto import SM2PrivateKey

# SM2 operations take ~0.3 ms; a shared CI machine can stall, so no per-example deadline.
settings.register_profile(
    "trustspace", deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough", parent=settings.get_profile("trustspace"), max_examples=3000
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "trustspace"))


@pytest.fixture(scope="session")
def keys() -> list[SM2PrivateKey]:
    """A few SM2 key pairs shared by the whole session (generation is cheap, but not free)."""
    return [SM2PrivateKey.generate() for _ in range(5)]
