"""Homomorphic mode: the provider computes on the consumer's TenSEAL ciphertexts.

Pure library: context and ciphertext checks, the fixed program catalog and its leak guards,
and the consumer's helpers. The job protocol, receipts and worker processes build on these.
"""

from .consumer import (
    PrivateContext,
    decrypt_result,
    encrypt_inputs,
    export_private,
    import_private,
    new_context,
)
from .context import PublicContext, ciphertext_byte_limit, load_ciphertext, load_public_context
from .errors import HomomorphicRefused, RefusalReason
from .params import MAX_COEFF_MODULUS_BITS_128, ContextParams, Scheme, check_security
from .programs import (
    CATALOG,
    SIGMOID_DEG3,
    Columns,
    HomomorphicPolicy,
    Inputs,
    Program,
    expected_inputs,
    run_program,
)

__all__ = [
    "CATALOG",
    "MAX_COEFF_MODULUS_BITS_128",
    "SIGMOID_DEG3",
    "Columns",
    "ContextParams",
    "HomomorphicPolicy",
    "HomomorphicRefused",
    "Inputs",
    "PrivateContext",
    "Program",
    "PublicContext",
    "RefusalReason",
    "Scheme",
    "check_security",
    "ciphertext_byte_limit",
    "decrypt_result",
    "encrypt_inputs",
    "export_private",
    "expected_inputs",
    "import_private",
    "load_ciphertext",
    "load_public_context",
    "new_context",
    "run_program",
]
