"""Every setting Raiox reads, from the environment and `.env`, in one pydantic-settings class."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


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
    database_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest wait for a database connection before answering 503."
    )
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
    raiox_max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest image accepted, in pixels (decompression-bomb guard)."
    )
    # Encoder and matching (embed)
    raiox_clip_model: str = Field(default="ViT-B-32", description="open_clip model name (512-d output).")
    raiox_clip_pretrained: str = Field(
        default="laion2b_s34b_b79k", description="open_clip pretrained tag, or a path to a checkpoint file."
    )
    raiox_device: str = Field(default="auto", description="`auto` (CUDA when present), `cpu` or `cuda[:n]`.")
    raiox_embed_batch_size: int = Field(default=32, ge=1, description="Images per encoder forward pass.")
    raiox_crop_to_implant: bool = Field(
        default=False,
        description="Crop each film to its most radiopaque object (the implant) before encoding; part of the "
        "model id, so references and queries always agree.",
    )
    raiox_top_k: int = Field(default=3, ge=1, le=20, description="Implant systems proposed per X-ray.")
    raiox_hnsw_ef_search: int = Field(
        default=64, ge=10, le=1000,
        description="HNSW candidate list per query; also how many references are aggregated per match.",
    )
    raiox_low_confidence_margin: float = Field(
        default=0.02, ge=0, le=2,
        description="A match is low-confidence when its top similarity leads the second by less than this; "
        "calibrate per model with `raiox eval`, which suggests a value.",
    )
    raiox_low_confidence_similarity: float = Field(
        default=0.0, ge=-1, le=1, description="…or when its top similarity is below this (0: off).",
    )
    embed_jobs_per_call: int = Field(default=16, ge=1, description="Embed jobs claimed per batch.")
    embed_lease_seconds: int = Field(
        default=300, ge=10, description="How long a claimed embed job is held before another worker may take it."
    )
    embed_max_attempts: int = Field(default=5, ge=1, description="Attempts before an embed job and its case fail.")

    # Intake (webhook)
    webhook_token: SecretStr | None = Field(
        default=None,
        description="Secret the webhook URL carries as `?token=`. Unset: the webhook answers 503 to "
        "everything, except with RAIOX_ENV=dev where it accepts calls without a token.",
    )
    jotform_form_ids: str = Field(
        default="", description="Comma-separated Jotform form ids the webhook accepts; empty: any form."
    )
    jotform_xray_field: str | None = Field(
        default=None,
        description="rawRequest key of the X-ray upload answer (e.g. `xrayImage`); unset: every list of "
        "upload URLs in the submission.",
    )
    jotform_name_field: str | None = Field(
        default=None,
        description="rawRequest key of the client's name answer (e.g. `q3_name`); unset: the first "
        "full-name answer.",
    )
    jotform_api_key: SecretStr | None = Field(
        default=None,
        description="Jotform API key, sent as `apiKey` only to Jotform hosts (forms whose uploads need login).",
    )
    fetch_allowed_hosts: str = Field(
        default="",
        description="Comma-separated extra hosts (and their subdomains) images may be fetched from, beside "
        "Jotform's upload hosts and the Spaces endpoint.",
    )
    fetch_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1, description="Largest image download.")
    fetch_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Connect and read timeout of an image download; also its overall "
        "deadline, so a server that drips bytes cannot hold the webhook longer.",
    )
    webhook_max_body_bytes: int = Field(
        default=26 * 1024 * 1024, ge=1, description="Largest request body the webhook reads (413 above)."
    )
    webhook_max_images: int = Field(default=10, ge=1, description="Most X-rays taken from one submission.")
    embed_url: str | None = Field(
        default=None, description="URL the webhook pokes after a commit so embed starts at once; unset: no poke."
    )
    embed_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the embed function requires (and the webhook sends with its poke). Unset: "
        "embed answers 503, except with RAIOX_ENV=dev where it accepts calls without a token.",
    )

    # Review (approve)
    review_token_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs reviewer tokens. Unset: approve answers 503 (except health), except with "
        "RAIOX_ENV=dev where a key is derived from the local signing key.",
    )
    review_token_ttl_seconds: int = Field(
        default=8 * 3600, ge=60, le=7 * 86400, description="Lifetime of a reviewer's sign-in token."
    )
    admin_origin: str | None = Field(
        default=None,
        description="Comma-separated origins (scheme://host[:port]) of the admin page that may call approve "
        "from a browser (CORS); unset: same-origin only.",
    )
    learn_from_approvals: bool = Field(
        default=True, description="An approved case's X-rays become new references of the chosen implant."
    )
    review_login_max_failures: int = Field(
        default=5, ge=1, description="Wrong passwords for one reviewer name within the window before 429."
    )
    review_login_window_seconds: int = Field(
        default=900, ge=1, description="Window of the sign-in rate limit, in seconds."
    )
    notify_url: str | None = Field(
        default=None, description="URL approve pokes after a decision so notify starts at once; unset: no poke."
    )
    notify_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the notify function requires (and approve sends with its poke).",
    )

    # Delivery (notify)
    jotform_api_base: str = Field(
        default="https://api.jotform.com",
        description="Jotform REST API base: https://api.jotform.com (US), https://eu-api.jotform.com (EU) or "
        "https://hipaa-api.jotform.com (HIPAA).",
    )
    jotform_result_fields: str = Field(
        default="",
        description="Which question ids of the form receive the decision, e.g. `system=12,manufacturer=13,"
        "similarity=14,reviewer=15,decision=16,note=17`; empty: nothing is written back to Jotform.",
    )
    notify_webhook_url: str | None = Field(
        default=None, description="Optional URL that also receives each decision as a signed JSON document."
    )
    notify_webhook_secret: SecretStr | None = Field(
        default=None, description="Key of the HMAC-SHA256 signature sent with each NOTIFY_WEBHOOK_URL delivery."
    )
    notify_max_attempts: int = Field(
        default=10, ge=1, description="Delivery attempts of a decision before its notify job fails."
    )
    notify_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Connect and read timeout of each delivery request."
    )
    notify_jobs_per_call: int = Field(
        default=10, ge=1, description="Most notify jobs one call of the notify function (or sweep round) runs."
    )
    notify_lease_seconds: int = Field(
        default=120, ge=10, description="How long a claimed notify job is held before another worker may take it."
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

    @classmethod
    def given(cls, **values: Any) -> Settings:
        """Settings from `values` alone (field names), nothing read from the environment or a `.env`: for
        tools that run a Raiox of their own, and for tests."""
        return _GivenSettings(**values)


class _GivenSettings(Settings):
    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


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
