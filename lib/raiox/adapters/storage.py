"""Object storage for X-rays and reference images: one interface, an S3/Spaces backend and a local folder.

Keys are content-addressed (`<namespace>/<sha256[:2]>/<sha256><ext>`), so the same bytes are stored once.
Objects are always private; readers get expiring URLs (S3 presigned, or HMAC-signed for the local folder).
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import os
import re
import secrets
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from raiox.settings import Settings

_KEY = re.compile(r"^[a-z0-9][a-z0-9_.\-]*(/[a-z0-9][a-z0-9_.\-]*)*$")
_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_EXTENSION = re.compile(r"^(\.[a-z0-9]{1,8})?$")


class StorageError(RuntimeError):
    """The object store could not be reached or refused the operation."""


class InvalidKey(ValueError):
    """An object key outside the content-addressed form (e.g. path traversal)."""


class ObjectNotFound(KeyError):
    """No object under this key."""


class InvalidSignature(PermissionError):
    """A local-object URL whose signature is wrong or whose expiry has passed."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int
    content_type: str
    created: bool  # False when the same bytes were already stored


def validate_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise InvalidKey(f"invalid object key {key!r}")
    return key


def content_key(namespace: str, sha256: str, extension: str = "") -> str:
    if not _NAMESPACE.match(namespace) or not _EXTENSION.match(extension):
        raise InvalidKey(f"invalid namespace {namespace!r} or extension {extension!r}")
    return validate_key(f"{namespace}/{sha256[:2]}/{sha256}{extension}")


def content_type_for(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


class ObjectStore(ABC):
    """Private, content-addressed object storage."""

    def put(self, data: bytes, *, namespace: str, extension: str = "") -> StoredObject:
        """Store `data` under its content key; storing the same bytes again writes nothing."""
        sha256 = hashlib.sha256(data).hexdigest()
        key = content_key(namespace, sha256, extension)
        content_type = content_type_for(key)
        created = not self.exists(key)
        if created:
            self._write(key, data, content_type)
        return StoredObject(key, sha256, len(data), content_type, created)

    def put_at(self, key: str, data: bytes) -> None:
        """Store `data` under a key the caller chose (not content-addressed), replacing what was there."""
        self._write(validate_key(key), data, content_type_for(key))

    @abstractmethod
    def _write(self, key: str, data: bytes, content_type: str) -> None: ...

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a folder such as `inbox/`), sorted."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def presigned_url(self, key: str, expires_in: int) -> str:
        """A URL that lets its holder GET the object until `expires_in` seconds from now."""

    @abstractmethod
    def describe(self) -> str:
        """Where the objects live, without secrets."""


class LocalFolderStore(ObjectStore):
    """Objects as files under one folder; URLs signed with HMAC-SHA256 and served by the local server."""

    def __init__(self, root: Path, *, signing_key: bytes, public_url: str) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._signing_key = signing_key
        self.public_url = public_url.rstrip("/")

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _write(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Write then rename, so a reader never sees half an object.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        if not folder.is_dir():
            return []
        return sorted(str(path.relative_to(self.root)) for path in folder.rglob("*")
                      if path.is_file() and not path.name.startswith(".tmp-"))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _signature(self, key: str, expires: int) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def presigned_url(self, key: str, expires_in: int) -> str:
        expires = int(time.time()) + expires_in
        query = urlencode({"expires": expires, "signature": self._signature(validate_key(key), expires)})
        return f"{self.public_url}/objects/{quote(key)}?{query}"

    def verify(self, key: str, expires: str, signature: str, *, now: float | None = None) -> None:
        """Raise InvalidSignature unless (key, expires, signature) came from `presigned_url` and is unexpired."""
        try:
            expires_at = int(expires)
        except (TypeError, ValueError):
            raise InvalidSignature("missing or malformed expiry") from None
        expected = self._signature(validate_key(key), expires_at).encode()
        if not hmac.compare_digest(expected, (signature or "").encode("utf-8", "surrogateescape")):
            raise InvalidSignature("bad signature")
        if expires_at < (time.time() if now is None else now):
            raise InvalidSignature("link expired")

    def describe(self) -> str:
        return f"local folder {self.root}"


class S3Store(ObjectStore):
    """DigitalOcean Spaces or any S3-compatible endpoint through boto3; objects private, URLs presigned."""

    def __init__(self, bucket: str, *, prefix: str = "", client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        import boto3
        from botocore.config import Config

        location = urlsplit(settings.storage_url)
        endpoint = settings.spaces_endpoint
        host = (urlsplit(endpoint).hostname or "") if endpoint else ""
        # Spaces wants virtual-hosted buckets; local S3 servers (moto, MinIO on an IP) need path style.
        addressing: Literal["virtual", "path"] = "virtual" if host.endswith("digitaloceanspaces.com") else "path"
        client = boto3.client(
            "s3",
            region_name=settings.spaces_region,
            endpoint_url=endpoint,
            aws_access_key_id=settings.spaces_key.get_secret_value() if settings.spaces_key else None,
            aws_secret_access_key=settings.spaces_secret.get_secret_value() if settings.spaces_secret else None,
            config=Config(
                s3={"addressing_style": addressing},
                signature_version="s3v4",
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )
        return cls(location.netloc, prefix=location.path, client=client)

    def _object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _call(self, operation: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFound(params.get("Key", "")) from None
            raise StorageError(f"object storage refused {operation}: {code}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"object storage unreachable during {operation}: {type(exc).__name__}") from exc

    def _write(self, key: str, data: bytes, content_type: str) -> None:
        # No ACL argument: objects stay private (X-rays are medical data; never a public ACL).
        self._call("put_object", Key=self._object_key(key), Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        return bytes(self._call("get_object", Key=self._object_key(key))["Body"].read())

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Key=self._object_key(key))
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Delete the object and, where the bucket keeps versions (S3 Versioning, which Spaces supports), every
        version of it and every delete marker, so no earlier copy survives an erasure."""
        name = self._object_key(key)
        versions = self._versions(name)
        if not versions:
            self._call("delete_object", Key=name)
            return
        for version in versions:
            self._call("delete_object", Key=name, VersionId=version)

    def _versions(self, name: str) -> list[str]:
        """Version ids (delete markers included) of exactly `name`; [] where the store lists no versions."""
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            try:
                page = self._call("list_object_versions", Prefix=name, **token)
            except StorageError as exc:
                if "NotImplemented" in str(exc):  # a store without the versioning API: nothing to list
                    return []
                raise
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if entry.get("Key") == name and entry.get("VersionId"):
                    found.append(str(entry["VersionId"]))
            if not page.get("IsTruncated"):
                return found
            token = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page.get("NextVersionIdMarker", "")}

    def versions(self, key: str) -> list[str]:
        """Every version id stored for `key` (an unversioned object has one, `null`); erasure leaves none."""
        return self._versions(self._object_key(key))

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=self.prefix + prefix, **token)
            found += [item["Key"][len(self.prefix):] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(found)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def presigned_url(self, key: str, expires_in: int) -> str:
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._object_key(key)},
                ExpiresIn=min(expires_in, 604800),
            )
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.client.meta.endpoint_url}"


def local_signing_key(settings: Settings) -> bytes:
    """RAIOX_SIGNING_KEY, or a random key created once (mode 0600) in $RAIOX_HOME/signing.key."""
    if settings.raiox_signing_key is not None:
        return settings.raiox_signing_key.get_secret_value().encode()
    path = settings.raiox_home / "signing.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Write a complete file aside, then link it into place: two processes racing agree on one key.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing-")
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_bytes().strip()


def open_store(settings: Settings) -> ObjectStore:
    """The store RAIOX_STORAGE names: `file://…` (default under $RAIOX_HOME) or `s3://bucket[/prefix]`."""
    location = urlsplit(settings.storage_url)
    if location.scheme == "s3":
        return S3Store.from_settings(settings)
    return LocalFolderStore(
        Path(location.path),
        signing_key=local_signing_key(settings),
        public_url=settings.raiox_public_url,
    )
