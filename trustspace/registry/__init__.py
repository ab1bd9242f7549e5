"""The registry: participants and their credentials, data products and their classification,
registration certificates, the DSP catalog and the authority's federated catalog."""

from . import dsp
from .authority import RegistryError
from .classification import ComputeMode, Level
from .credentials import (
    CredentialInvalid,
    Membership,
    RegistrationCertificate,
    issue_membership,
    issue_registration,
    verify_membership,
    verify_registration,
)
from .products import ProductInvalid, ProductSpec, inspect_source, public_preview

__all__ = [
    "ComputeMode",
    "CredentialInvalid",
    "Level",
    "Membership",
    "ProductInvalid",
    "ProductSpec",
    "RegistrationCertificate",
    "RegistryError",
    "dsp",
    "inspect_source",
    "issue_membership",
    "issue_registration",
    "public_preview",
    "verify_membership",
    "verify_registration",
]
