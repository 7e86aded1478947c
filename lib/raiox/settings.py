"""Every setting Raiox reads, from the environment and `.env`, in one pydantic-settings class."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Field names are the environment variable names (matched case-insensitively)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    raiox_home: Path = Field(
        default=Path(".raiox"),
        description="Folder for all local state: embedded PostgreSQL, local objects, signing key.",
    )
    raiox_env: Literal["dev", "prod"] = Field(
        default="prod", description="`dev` relaxes checks meant for the internet (e.g. loopback image URLs)."
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL with pgvector. Unset: an embedded server (pgserver) under $RAIOX_HOME/pg.",
    )
    database_pool_max: int = Field(default=5, ge=1, description="Largest number of pooled connections.")
    raiox_storage: str | None = Field(
        default=None,
        description="`file:///path` (default `$RAIOX_HOME/objects`) or `s3://bucket[/prefix]` for Spaces.",
    )
    spaces_endpoint: str | None = Field(
        default=None, description="S3 endpoint, e.g. https://fra1.digitaloceanspaces.com."
    )
    spaces_region: str = Field(default="us-east-1", description="Region of the Spaces bucket, e.g. fra1.")
    spaces_key: SecretStr | None = Field(default=None, description="Spaces access key id.")
    spaces_secret: SecretStr | None = Field(default=None, description="Spaces secret key.")
    raiox_signing_key: SecretStr | None = Field(
        default=None,
        description="Key that signs local object URLs. Unset: generated once into $RAIOX_HOME/signing.key.",
    )
    raiox_public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Base URL of the local server that serves signed local-object URLs.",
    )
    raiox_url_expiry_seconds: int = Field(
        default=900, ge=1, le=604800, description="Lifetime of presigned X-ray and reference image URLs."
    )

    @field_validator("raiox_storage")
    @classmethod
    def _known_storage_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("file", "s3"):
            raise ValueError("RAIOX_STORAGE must start with file:// or s3://")
        return value

    @property
    def storage_url(self) -> str:
        if self.raiox_storage:
            return self.raiox_storage
        return (self.raiox_home.resolve() / "objects").as_uri()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings(...)` instead."""
    return Settings()


def redact_url(url: str) -> str:
    """A connection URL with its password replaced, safe to print or log."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
