"""Every setting Raiox reads, from the environment and `.env`, in one pydantic-settings class."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# Outside URLs that carry a secret (a token, a key, signed requests, patient data), and what each carries: https
# only, or plain http to a loopback address, which never leaves the machine (`raiox dev`, tests).
SECRET_URLS = {
    "spaces_endpoint": "requests signed with the Spaces key, and the X-rays",
    "embed_url": "EMBED_TOKEN",
    "notify_url": "NOTIFY_TOKEN",
    "jotform_api_base": "JOTFORM_API_KEY",
    "notify_webhook_url": "signed result documents",
}
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


def check_secret_url(url: str, setting: str, carries: str) -> None:
    """ValueError naming `setting` unless `url` is https, or http to a loopback address."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".").lower()
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"{setting} must be an https:// URL with a host (it carries {carries})")
    if scheme == "https":
        return
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host in _LOCAL_NAMES
    if not local:
        raise ValueError(f"{setting} must be an https:// URL (it carries {carries}); plain http is allowed only "
                         "to a loopback address (127.0.0.1, ::1, localhost)")


class Settings(BaseSettings):
    """Field names are the environment variable names (matched case-insensitively)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    raiox_home: Path = Field(
        default=Path(".raiox"),
        description="Folder for all local state: embedded PostgreSQL (`pg/`), local objects (`objects/`), "
        "`signing.key`.",
    )
    raiox_env: Literal["dev", "prod"] = Field(
        default="prod",
        description="`dev` relaxes checks meant for the internet (loopback image URLs for the simulator, http "
        "delivery URLs, no token needed where none is set).",
    )
    raiox_log_format: Literal["json", "text"] = Field(
        default="json",
        description="How functions and workers log: one JSON object per event (for `doctl serverless "
        "activations logs` and log search), or text. The `raiox` command logs text unless this is set.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL with pgvector ≥ 0.6, e.g. a DigitalOcean managed database. Unset: an embedded "
        "PostgreSQL 16 + pgvector (pgserver) with data in `$RAIOX_HOME/pg`, started on first use and "
        "stopped when the last process using it exits.",
    )
    database_pool_max: int = Field(
        default=5, ge=1,
        description="Largest number of pooled connections per process.",
    )
    database_timeout_seconds: float = Field(
        default=10.0, gt=0,
        description="Longest wait for a database connection before a function answers 503.",
    )
    raiox_storage: str | None = Field(
        default=None,
        description="Where X-rays and reference images go: `file:///path` (default `$RAIOX_HOME/objects`) or "
        "`s3://bucket[/prefix]` (Spaces or any S3 endpoint).",
    )
    spaces_endpoint: str | None = Field(
        default=None,
        description="S3 endpoint for `s3://` storage, e.g. `https://fra1.digitaloceanspaces.com` (virtual-hosted "
        "buckets there, path style elsewhere).",
    )
    spaces_region: str = Field(
        default="us-east-1",
        description="Region of the bucket, e.g. `fra1`.",
    )
    spaces_key: SecretStr | None = Field(
        default=None,
        description="Spaces access key id.",
    )
    spaces_secret: SecretStr | None = Field(
        default=None,
        description="Spaces secret key.",
    )
    raiox_signing_key: SecretStr | None = Field(
        default=None,
        description="Key that signs local-object URLs. Unset: a random key created once in "
        "`$RAIOX_HOME/signing.key` (mode 0600).",
    )
    raiox_public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Base URL of the local server that answers signed local-object URLs.",
    )
    raiox_url_expiry_seconds: int = Field(
        default=900, ge=1, le=604800,
        description="Lifetime of expiring X-ray and reference-image URLs (1 s to 7 days).",
    )
    raiox_max_image_pixels: int = Field(
        default=40_000_000, ge=1,
        description="Largest image accepted anywhere, in pixels (decompression-bomb guard; 413 above).",
    )
    raiox_max_decoded_mb: int = Field(
        default=128, ge=1,
        description="Largest image accepted anywhere, in MiB once decoded: rows × columns × samples × bytes per "
        "sample as its header declares them (a 40-megapixel 16-bit film is 80 MiB), checked before decoding, "
        "and the most a deflated DICOM may inflate to (413 above).",
    )
    raiox_decode_isolation: bool = Field(
        default=True,
        description="Decode untrusted films (intake's uploads, the fetch step's downloads) in child processes "
        "with a memory and a time limit, so a film that explodes a decoder ends only its child and fails with "
        "the reason. `false` decodes them in the process itself, under the header limits alone.",
    )
    raiox_decode_memory_mb: int = Field(
        default=768, ge=64,
        description="Memory one decoding child may use beyond the decoders it loaded (its address space is "
        "capped); a film that needs more fails, naming this limit. A 1 GiB function needs it well under 1024 "
        "less what the function itself holds.",
    )
    raiox_decode_seconds: float = Field(
        default=30.0, gt=0,
        description="Longest one film may take to decode in its child before the child is killed and the film "
        "fails, naming this limit.",
    )
    raiox_decode_processes: int = Field(
        default=2, ge=1,
        description="Decoding children a process keeps and runs at once (each up to `RAIOX_DECODE_MEMORY_MB`); "
        "more films wait their turn.",
    )
    # Encoder and matching (embed)
    raiox_clip_model: str = Field(
        default="",
        description="The image model that embeds each implant's canonical crop, when it is an open_clip model: "
        "its name (it must embed to 512 dimensions, the schema's `vector(512)`), with an open_clip tag (e.g. "
        "`ViT-B-32` with `laion2b_s34b_b79k`) or a checkpoint without a sidecar. Not needed for the shipped "
        "shape encoder or a checkpoint `raiox train` wrote: their `.json` sidecar names the architecture.",
    )
    raiox_clip_pretrained: str = Field(
        default="shipped",
        description="`shipped`: the shape encoder shipped with Raiox (a small network trained on canonical crops "
        "of thousands of rendered systems; works offline; docs/quality.md). Else the path of a checkpoint "
        "(`raiox train` writes one), or an open_clip pretrained tag (with `RAIOX_CLIP_MODEL`). Weights that "
        "cannot be loaded stop the encoder with an error naming this setting; it never falls back to random "
        "weights.",
    )
    raiox_descriptor_weight: float = Field(
        default=0.05, ge=0.0, le=0.9,
        description="Share of the measured shape descriptor in the similarity of two implants (the rest is the "
        "shape encoder's embedding); part of the model id. Not used with open_clip models.",
    )
    raiox_device: str = Field(
        default="auto",
        description="`auto` (CUDA with fp16 autocast when present, else CPU), `cpu` or `cuda[:n]`.",
    )
    raiox_embed_batch_size: int = Field(
        default=32, ge=1,
        description="Implant crops per encoder forward pass.",
    )
    raiox_top_k: int = Field(
        default=3, ge=1, le=20,
        description="Implant systems proposed per X-ray.",
    )
    raiox_hnsw_ef_search: int = Field(
        default=64, ge=10, le=1000,
        description="`hnsw.ef_search` of the matching query and the number of nearest references aggregated into "
        "implant systems; 128 from about a million references of one model (docs/benchmarks.md).",
    )
    raiox_index_build_memory: str | None = Field(
        default=None, pattern=r"^[0-9]+\s*(kB|MB|GB)$",
        description="`maintenance_work_mem` for building a model's HNSW index (e.g. `4GB` for a million "
        "references; docs/benchmarks.md); unset: the database's own. pgvector builds far faster while the "
        "graph fits in it.",
    )
    raiox_low_confidence_margin: float = Field(
        default=0.02, ge=0, le=2,
        description="A match is low-confidence when its top similarity leads the second by less than this; the "
        "admin page and the Jotform result say so. Calibrate per model with `raiox eval`, which "
        "suggests a value.",
    )
    raiox_low_confidence_similarity: float = Field(
        default=0.0, ge=-1, le=1,
        description="…or when its top similarity is below this (0: off).",
    )
    embed_jobs_per_call: int = Field(
        default=16, ge=1,
        description="Embed jobs claimed (and encoded together) per batch.",
    )
    embed_lease_seconds: int = Field(
        default=300, ge=10,
        description="How long a claimed embed job stays with its worker before another may take it over.",
    )
    embed_max_attempts: int = Field(
        default=5, ge=1,
        description="Attempts before an embed job, and its case, are marked failed.",
    )

    # Intake (webhook)
    webhook_token: SecretStr | None = Field(
        default=None,
        description="Secret the webhook URL carries as `?token=`. Unset: the webhook answers 503 to everything, "
        "except with `RAIOX_ENV=dev` where calls need no token.",
    )
    jotform_form_ids: str = Field(
        default="",
        description="Comma-separated Jotform form ids the webhook accepts (403 for others); empty: any form.",
    )
    jotform_xray_field: str | None = Field(
        default=None,
        description="rawRequest key of the X-ray upload answer, with or without its `q<N>_` prefix (e.g. "
        "`xrayImage`); unset: every list of upload URLs in the submission.",
    )
    jotform_name_field: str | None = Field(
        default=None,
        description="rawRequest key of the client's name answer (e.g. `q3_name`); unset: the first full-name "
        "answer.",
    )
    jotform_api_key: SecretStr | None = Field(
        default=None,
        description="Jotform API key: added as `apiKey=` only to downloads from Jotform hosts (forms whose "
        "uploads require login), and sent in the `APIKEY` header when results are written back.",
    )
    fetch_allowed_hosts: str = Field(
        default="",
        description="Comma-separated extra hosts (with their subdomains) X-rays may be downloaded from, beside "
        "Jotform's and the Spaces endpoint.",
    )
    fetch_max_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1,
        description="Largest X-ray download or upload, enforced while streaming.",
    )
    fetch_timeout_seconds: float = Field(
        default=10.0, gt=0,
        description="Connect and read timeout of one download, and its overall deadline, so a server that drips "
        "bytes cannot hold a worker longer.",
    )
    fetch_deadline_seconds: float = Field(
        default=30.0, gt=0,
        description="Overall deadline of one submission's downloads in one fetch attempt, however many X-rays it "
        "has; what is not done by then is tried again.",
    )
    fetch_max_attempts: int = Field(
        default=6, ge=1,
        description="Attempts of a fetch job before X-rays that kept failing for a passing reason (timeouts, "
        "5xx, 429, object storage down) are given up on (backoff 5 s, 10 s, 20 s … 5 min, with jitter).",
    )
    fetch_jobs_per_call: int = Field(
        default=8, ge=1,
        description="Fetch jobs (submissions) claimed per batch.",
    )
    fetch_lease_seconds: int = Field(
        default=180, ge=10,
        description="How long a claimed fetch job stays with its worker before another may take it over.",
    )
    jotform_reconcile_minutes: int = Field(
        default=10, ge=0,
        description="How often the sweeper asks Jotform's API for each form's recent submissions and records any "
        "that never became a case (a webhook Jotform did not deliver); 0: never. Needs `JOTFORM_FORM_IDS` and "
        "`JOTFORM_API_KEY`.",
    )
    webhook_max_body_bytes: int = Field(
        default=750_000, ge=1,
        description="Largest webhook request body (413 above, naming the URL form). DigitalOcean Functions "
        "accept requests up to 1 MB and hand a raw function its body base64-encoded, so about 750 kB is the "
        "most that arrives there; larger films go as a URL (Jotform's upload, or the JSON form's `image_url`). "
        "A larger value only matters for `raiox dev` and other local servers.",
    )
    webhook_max_images: int = Field(
        default=10, ge=1,
        description="Most X-rays taken from one submission (422 above).",
    )
    embed_url: str | None = Field(
        default=None,
        description="URL the webhook POSTs `{\"case_id\"}` to after a commit so embed starts at once, and the "
        "sweeper hands due embed jobs to; unset: no poke (the job waits in the table for `raiox "
        "worker`).",
    )
    embed_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the embed function requires, sent with the webhook's and the sweeper's pokes. "
        "Unset: embed answers 503, except with `RAIOX_ENV=dev`.",
    )

    # Review (approve)
    review_token_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs reviewers' sign-in tokens (e.g. `openssl rand -hex 32`). Unset: approve "
        "answers 503 (except `/health`), except with `RAIOX_ENV=dev` where a key is derived from the "
        "local signing key. Changing it signs everyone out.",
    )
    review_token_ttl_seconds: int = Field(
        default=8 * 3600, ge=60, le=7 * 86400,
        description="Lifetime of a sign-in token (1 min to 7 days); then the page asks to sign in again.",
    )
    admin_origin: str | None = Field(
        default=None,
        description="Comma-separated origins of the admin page (`https://admin.example.com`) that may call "
        "approve from a browser (CORS); unset: same origin only, as with `raiox dev`.",
    )
    raiox_retention_days: int = Field(
        default=0, ge=0,
        description="Erase a case's X-rays and personal fields this many days after its answer was delivered "
        "(`notified`; the sweeper does it; an anonymous record of the decision stays); 0: keep until erased by "
        "hand. The other statuses have their own periods below.",
    )
    raiox_retention_undelivered_days: int = Field(
        default=0, ge=0,
        description="…cases decided (`approved`, `rejected`) but never delivered, this many days after the "
        "decision; 0: keep.",
    )
    raiox_retention_undecided_days: int = Field(
        default=0, ge=0,
        description="…cases `ready` that no reviewer decided, this many days after they became ready; 0: keep.",
    )
    raiox_retention_failed_days: int = Field(
        default=0, ge=0,
        description="…cases `failed` (needing attention) and never retried, this many days after they failed; "
        "0: keep.",
    )
    raiox_retention_stalled_days: int = Field(
        default=0, ge=0,
        description="…cases still `received` or `embedding` this many days after their last change and with no "
        "job working on them (a case stuck in intake); 0: keep.",
    )
    erase_max_attempts: int = Field(
        default=20, ge=1,
        description="Attempts to delete an erased case's submission at Jotform (`DELETE /submission/{id}`, "
        "backoff 1 min, 2 min … 6 h, with jitter: about four days) before the erase job fails with the reason "
        "(the system view and the case's trail show it; `raiox case erase` again retries).",
    )
    learn_from_approvals: bool = Field(
        default=True,
        description="An approved case's X-rays become references of the chosen implant (source `approved_case`), "
        "so later X-rays match them; `false` keeps the catalog as imported.",
    )
    review_login_max_failures: int = Field(
        default=5, ge=1,
        description="Wrong passwords for one reviewer name from one address within the window before that address "
        "waits a growing delay (1 s, 2 s, 4 s …) before its next try is checked (429, even to the right password).",
    )
    review_login_max_failures_per_name: int = Field(
        default=100, ge=1,
        description="Wrong passwords for one reviewer name from every address together within the window before "
        "nobody signs in under that name (429, the reviewer too) until the window has passed: a ceiling on "
        "guessing that no address header can get around.",
    )
    review_login_window_seconds: int = Field(
        default=900, ge=1,
        description="Window of that limit; counted in the database, so it holds across every function instance.",
    )
    notify_url: str | None = Field(
        default=None,
        description="URL approve POSTs `{\"case_id\"}` to after a decision so delivery starts at once; unset: no "
        "poke (the notify job waits for the sweeper).",
    )
    notify_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the notify function requires, sent with approve's poke.",
    )

    # Delivery (notify)
    jotform_api_base: str = Field(
        default="https://api.jotform.com",
        description="Jotform REST API base of the account: `https://api.jotform.com` (US), `https://eu-"
        "api.jotform.com` (EU) or `https://hipaa-api.jotform.com` (HIPAA); https only outside "
        "`RAIOX_ENV=dev`.",
    )
    jotform_result_fields: str = Field(
        default="",
        description="Which questions of the form receive the decision, `key=QID,…` (see docs/delivery.md), e.g. "
        "`system=12,manufacturer=13,similarity=14,reviewer=15,decision=16,note=17`; empty: nothing is"
        " written to Jotform. Uses `JOTFORM_API_KEY`.",
    )
    notify_webhook_url: str | None = Field(
        default=None,
        description="Also POST each decision as a signed JSON document here (see docs/delivery.md); https only "
        "outside `RAIOX_ENV=dev`.",
    )
    notify_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key of the `X-Raiox-Signature` HMAC-SHA256 of each webhook delivery; required with "
        "`NOTIFY_WEBHOOK_URL`.",
    )
    notify_max_attempts: int = Field(
        default=10, ge=1,
        description="Delivery attempts of a decision before its notify job fails (backoff 30 s, 1 min, 2 min … 1 "
        "h, with jitter).",
    )
    notify_timeout_seconds: float = Field(
        default=10.0, gt=0,
        description="Connect and read timeout of each delivery request (Jotform, webhook) and of the sweeper's "
        "embed poke connect.",
    )
    notify_jobs_per_call: int = Field(
        default=10, ge=1,
        description="Most notify jobs one call of the notify function, or one `raiox worker` round, delivers.",
    )
    notify_lease_seconds: int = Field(
        default=120, ge=10,
        description="How long a claimed notify job stays with its worker before another may take it over (longer "
        "than one delivery).",
    )

    @field_validator(*SECRET_URLS)
    @classmethod
    def _https_where_a_secret_travels(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.field_name is not None:  # empty: unset (no poke, no webhook)
            check_secret_url(value, info.field_name.upper(), SECRET_URLS[info.field_name])
        return value

    @field_validator("raiox_storage")
    @classmethod
    def _known_storage_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("file", "s3"):
            raise ValueError("RAIOX_STORAGE must start with file:// or s3://")
        return value

    @property
    def is_dev(self) -> bool:
        """`RAIOX_ENV=dev`: the relaxed checks of a local run (see `raiox_env`)."""
        return self.raiox_env == "dev"

    @property
    def storage_url(self) -> str:
        if self.raiox_storage:
            return self.raiox_storage
        return (self.raiox_home.resolve() / "objects").as_uri()

    def placeholder_secrets(self) -> list[str]:
        """Secret settings holding an empty or placeholder value (`CHANGE-ME…`, as in .env.example): production
        refuses to run with any of them."""
        found = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                text = value.get_secret_value().strip().lower()
                if not text or "change-me" in text or "changeme" in text:
                    found.append(name.upper())
        return found

    @classmethod
    def given(cls, **values: Any) -> Settings:
        """Settings from `values` alone (field names), nothing read from the environment or a `.env`: for
        tools that run a Raiox of their own, and for tests."""
        return _GivenSettings(**values)


# The sections of docs/settings.md, each named at its first field; fields follow in the order declared above.
SECTIONS = {
    "raiox_home": "Where Raiox keeps things",
    "raiox_clip_model": "Embed: the encoder and matching",
    "webhook_token": "Intake: the webhook",
    "review_token_secret": "Review: the approve function and the admin page",
    "jotform_api_base": "Delivery: the notify function",
}


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
