"""sandbox: the consumer's code runs next to the provider's data in an isolated sandbox, and only
checked results leave.

- `bundle`: code bundles (`pack`, `unpack`, `digest`, `listing`);
- `runner`: `SandboxJob`, `Limits`, `SandboxResult`, the `Sandbox` seam and `BubblewrapSandbox`;
- `api`: what the job's code calls inside the sandbox (`from trustspace.sandbox import api`);
- `results`: `read_results`, the strict host-side parser of what the job wrote;
- `release`: what of a result may leave the node.

docs/security.md says what the sandbox does and does not isolate.
"""

from .bundle import digest, listing, pack, unpack
from .errors import BundleInvalid, JobInvalid, ResultsInvalid, SandboxError, SandboxUnavailable
from .results import Aggregate, File, Output, Results, Table, read_results
from .runner import (
    DEFAULT_HOST_ID,
    BubblewrapSandbox,
    Limits,
    Outcome,
    Sandbox,
    SandboxJob,
    SandboxResult,
)

__all__ = [
    "DEFAULT_HOST_ID",
    "Aggregate",
    "BubblewrapSandbox",
    "BundleInvalid",
    "File",
    "JobInvalid",
    "Limits",
    "Outcome",
    "Output",
    "Results",
    "ResultsInvalid",
    "Sandbox",
    "SandboxError",
    "SandboxJob",
    "SandboxResult",
    "SandboxUnavailable",
    "Table",
    "digest",
    "listing",
    "pack",
    "read_results",
    "unpack",
]
