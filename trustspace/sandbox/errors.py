"""The sandbox's typed errors: each names what was refused and why."""

from __future__ import annotations


class SandboxError(Exception):
    """Base of the sandbox's errors."""


class BundleInvalid(SandboxError):
    """A code bundle was refused (unsafe or malformed archive, no entry point, too large)."""

    def __init__(self, reason: str, *, member: str | None = None) -> None:
        self.reason = reason
        self.member = member
        super().__init__(f"{member}: {reason}" if member else reason)


class ResultsInvalid(SandboxError):
    """A job's output directory does not hold a valid ``trustspace.results/1`` document."""

    def __init__(self, reason: str, *, output: str | None = None) -> None:
        self.reason = reason
        self.output = output
        super().__init__(f"output {output!r}: {reason}" if output else reason)


class JobInvalid(SandboxError):
    """A job cannot be started as specified (bad data name, missing or unreadable file ...)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SandboxUnavailable(SandboxError):
    """This machine cannot run the requested sandbox backend (missing tool, unsupported CPU
    architecture for the seccomp filter, interpreter path that collides with a sandbox path)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
