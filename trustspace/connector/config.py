"""A node's configuration: `<home>/trustspace.toml`, overridden by TRUSTSPACE_* environment
variables. Nothing is read at import time; `Settings.load(home)` builds one for a given home."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_FILE = "trustspace.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRUSTSPACE_", extra="forbid")

    home: Path
    name: str = Field(min_length=1, max_length=100)
    kind: Literal["authority", "participant"] = "participant"
    public_url: str  # how other nodes reach this one, e.g. http://127.0.0.1:8101
    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=0, le=65535)
    database_url: str = ""  # empty: SQLite file node.db in the home
    key_file: str = "node-key.pem"
    key_password_env: str | None = None  # name of the variable holding the key's password
    authority_url: str | None = None  # None on the authority itself
    authority_key_file: str = "authority.pub.pem"  # the trust anchor
    operator_token_digest: str  # "sm3:<hex>" of the operator's bearer token
    regulator_token_digest: str | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Job requests (POST /transfers/request, /api/jobs): a homomorphic job's frame of up to
    # 64 MiB of ciphertexts, in base64, in JSON.
    max_job_body_bytes: int = Field(default=96 * 1_048_576, ge=1024)
    clock_skew_seconds: int = Field(default=300, ge=1)
    revocation_ttl_seconds: float = Field(default=30.0, ge=0)
    membership_days: int = Field(default=365, ge=1)
    http_timeout_seconds: float = Field(default=10.0, gt=0)
    crawl_interval_seconds: float = Field(default=300.0, ge=0)  # authority; 0: only on demand
    # Where receipts go: the node's own log (local), the data space's shared log at the
    # authority, or the own log anchored on an EVM chain. auto: authority when there is one.
    ledger: Literal["auto", "local", "authority", "evm"] = "auto"
    witness_quorum: int = Field(default=2, ge=1)  # cosignatures that make a checkpoint final
    evm_rpc_url: str | None = None
    evm_contract: str | None = None  # address of the deployed ReceiptLedger
    evm_key_env: str = "TRUSTSPACE_EVM_KEY"  # variable holding the chain account's key (hex)
    evm_confirmations: int = Field(default=1, ge=0)
    evm_batch: bool = True  # one Merkle root per transaction instead of one per receipt
    job_workers: int = Field(default=1, ge=0)  # in-process; `trustspace worker` adds more
    job_wall_seconds: float = Field(default=120.0, gt=0)
    job_cpu_seconds: int = Field(default=60, ge=1)
    job_memory_mb: int = Field(default=1024, ge=64)
    # A federated job's SuperNode serves the consumer's run for at most this long.
    fl_wall_seconds: float = Field(default=900.0, gt=0)
    # How long a worker holds a job before another may take it over (it died): by default
    # the job's wall-clock limit plus a minute, so a live worker never loses its job.
    job_lease_seconds: float | None = Field(default=None, gt=0)
    # How often a separate `trustspace worker` looks for new jobs when idle (the workers inside
    # `serve` are woken at once): one indexed query per worker each time.
    job_poll_seconds: float = Field(default=0.1, gt=0)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed in as init values).
        return env_settings, init_settings

    @classmethod
    def load(cls, home: Path) -> Settings:
        path = home / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_FILE} in {home}: run `trustspace init` first")
        with path.open("rb") as f:
            data = tomllib.load(f)
        return cls(home=home, **data)

    def path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.home / p

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'node.db'}"

    def save(self) -> None:
        values = self.model_dump(exclude={"home"}, exclude_none=True)
        (self.home / CONFIG_FILE).write_text(_toml(values))


def _toml(values: dict[str, Any]) -> str:
    """A flat TOML document of strings, numbers and booleans (all our settings are flat)."""
    lines = []
    for key, value in sorted(values.items()):
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int | float):
            rendered = repr(value)
        else:
            text = str(value).replace("\\", "\\\\").replace('"', '\\"')
            rendered = f'"{text}"'
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"
