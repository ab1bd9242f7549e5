"""The homomorphic mode's typed refusal: what was refused and why."""

from __future__ import annotations

import enum


class RefusalReason(enum.Enum):
    """Why the provider refused a context, a ciphertext or a program run."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    SECRET_KEY = "secret_key"  # noqa: S105 - a reason code, not a password
    INSECURE_PARAMETERS = "insecure_parameters"
    SCHEME_NOT_ALLOWED = "scheme_not_allowed"
    WRONG_SIZE = "wrong_size"
    WRONG_PARAMETERS = "wrong_parameters"
    MISSING_KEYS = "missing_keys"
    PROGRAM_NOT_ALLOWED = "program_not_allowed"
    COLUMN_NOT_ALLOWED = "column_not_allowed"
    PER_ROW_NOT_ALLOWED = "per_row_not_allowed"
    TOO_FEW_ROWS = "too_few_rows"
    BAD_TABLE = "bad_table"
    OVERFLOW = "overflow"
    EVALUATION_FAILED = "evaluation_failed"


class HomomorphicRefused(Exception):  # noqa: N818 - a refusal, named like the sandbox's errors
    """The provider refuses; ``reason`` is the machine code for the refusal receipt."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")
