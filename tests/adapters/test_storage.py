"""Object storage on both backends: round trip, dedupe, privacy, expiring URLs fetched over real HTTP."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from werkzeug.serving import make_server

from raiox.adapters.storage import (
    InvalidKey,
    InvalidSignature,
    LocalFolderStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    open_store,
)
from raiox.settings import Settings
from raiox.tools.object_server import create_object_app

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"not really a png, but storage does not care" * 10


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[LocalFolderStore]:
    """A local folder store whose signed URLs are served by the object server on a free port."""
    store = LocalFolderStore(tmp_path / "objects", signing_key=b"k" * 32, public_url="http://placeholder")
    server = make_server("127.0.0.1", 0, create_object_app(store), threaded=True)
    store.public_url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store
    server.shutdown()


@pytest.fixture
def s3_store(raiox_home: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    monkeypatch.setenv("RAIOX_STORAGE", f"s3://{s3_bucket}/xr")
    store = open_store(Settings())
    assert isinstance(store, S3Store)
    return store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")


def test_round_trip_and_dedupe(store: ObjectStore) -> None:
    first = store.put(PNG_BYTES, namespace="xrays", extension=".png")
    again = store.put(PNG_BYTES, namespace="xrays", extension=".png")
    assert first.created and not again.created
    assert first.key == again.key == f"xrays/{first.sha256[:2]}/{first.sha256}.png"
    assert first.content_type == "image/png" and first.size == len(PNG_BYTES)
    assert store.get(first.key) == PNG_BYTES
    store.delete(first.key)
    assert not store.exists(first.key)
    with pytest.raises(ObjectNotFound):
        store.get(first.key)


def test_presigned_url_fetches_over_http(store: ObjectStore) -> None:
    key = store.put(PNG_BYTES, namespace="xrays", extension=".png").key
    response = requests.get(store.presigned_url(key, expires_in=60), timeout=10)
    assert response.status_code == 200
    assert response.content == PNG_BYTES


def test_objects_are_private(store: ObjectStore) -> None:
    key = store.put(PNG_BYTES, namespace="xrays", extension=".png").key
    unsigned = store.presigned_url(key, expires_in=60).split("?")[0]
    assert requests.get(unsigned, timeout=10).status_code == 403


def test_s3_objects_carry_no_public_grant(s3_store: S3Store) -> None:
    key = s3_store.put(PNG_BYTES, namespace="xrays", extension=".png").key
    grants = s3_store.client.get_object_acl(Bucket=s3_store.bucket, Key="xr/" + key)["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    assert all("URI" not in g["Grantee"] for g in grants)  # no AllUsers / AuthenticatedUsers group


def test_s3_presigned_url_carries_the_expiry(s3_store: S3Store) -> None:
    # moto does not enforce presigned expiry, so check what Spaces will enforce: the signed lifetime.
    key = s3_store.put(PNG_BYTES, namespace="xrays", extension=".png").key
    query = parse_qs(urlsplit(s3_store.presigned_url(key, expires_in=120)).query)
    assert query["X-Amz-Expires"] == ["120"]
    assert "X-Amz-Signature" in query


def test_local_expired_and_tampered_urls_are_refused(local_store: LocalFolderStore) -> None:
    key = local_store.put(PNG_BYTES, namespace="xrays", extension=".png").key
    expired = local_store.presigned_url(key, expires_in=-1)
    assert requests.get(expired, timeout=10).status_code == 403
    valid = local_store.presigned_url(key, expires_in=60)
    tampered = valid.replace("signature=", "signature=0")
    assert requests.get(tampered, timeout=10).status_code == 403
    other = local_store.put(b"other bytes", namespace="xrays", extension=".png").key
    assert requests.get(valid.replace(key, other), timeout=10).status_code == 403  # signature is per key
    extended = valid.replace("expires=", "expires=9")
    assert requests.get(extended, timeout=10).status_code == 403  # expiry is signed too


def test_local_url_expires_after_its_lifetime(local_store: LocalFolderStore) -> None:
    key = local_store.put(PNG_BYTES, namespace="xrays", extension=".png").key
    query = parse_qs(urlsplit(local_store.presigned_url(key, expires_in=30)).query)
    expires, signature = query["expires"][0], query["signature"][0]
    local_store.verify(key, expires, signature)
    with pytest.raises(InvalidSignature, match="expired"):
        local_store.verify(key, expires, signature, now=time.time() + 31)


@pytest.mark.parametrize("key", ["../etc/passwd", "xrays/../../x", "/abs/path", "xrays//x", "Xrays/a", "a/./b"])
def test_path_traversal_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.get(key)


def test_path_traversal_over_http_is_refused(local_store: LocalFolderStore, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("TOP-SECRET-CONTENT")
    response = requests.get(f"{local_store.public_url}/objects/..%2Fsecret.txt?expires=9999999999&signature=x",
                            timeout=10)
    assert response.status_code in (403, 404)
    assert "TOP-SECRET-CONTENT" not in response.text


def test_local_files_are_private_to_the_owner(local_store: LocalFolderStore) -> None:
    stored = local_store.put(PNG_BYTES, namespace="xrays", extension=".png")
    path = local_store.root / stored.key
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(local_store.root.stat().st_mode) & 0o077 == 0


def test_local_signing_key_is_created_once(raiox_home: Path) -> None:
    first = open_store(Settings())
    second = open_store(Settings())
    assert isinstance(first, LocalFolderStore) and isinstance(second, LocalFolderStore)
    key = first.put(PNG_BYTES, namespace="xrays", extension=".png").key
    query = parse_qs(urlsplit(first.presigned_url(key, 60)).query)
    second.verify(key, query["expires"][0], query["signature"][0])  # same key across processes
    assert stat.S_IMODE((raiox_home / "signing.key").stat().st_mode) == 0o600


def test_s3_delete_removes_every_version_of_a_versioned_bucket(s3_store: S3Store) -> None:
    s3_store.client.put_bucket_versioning(Bucket=s3_store.bucket, VersioningConfiguration={"Status": "Enabled"})
    key = s3_store.put(PNG_BYTES, namespace="xrays", extension=".png").key
    s3_store.put_at(key, PNG_BYTES + b"again")  # a second version of the same key
    s3_store.client.delete_object(Bucket=s3_store.bucket, Key="xr/" + key)  # and a delete marker over both
    other = s3_store.put(PNG_BYTES + b"other", namespace="xrays", extension=".png").key
    assert len(s3_store.versions(key)) == 3
    s3_store.delete(key)
    listed = s3_store.client.list_object_versions(Bucket=s3_store.bucket, Prefix="xr/")
    left = [entry["Key"] for entry in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]]
    assert left == ["xr/" + other]  # nothing of the erased key, and its neighbour untouched


def test_s3_delete_of_an_unversioned_object_leaves_nothing(s3_store: S3Store) -> None:
    key = s3_store.put(PNG_BYTES, namespace="xrays", extension=".png").key
    s3_store.delete(key)
    assert s3_store.versions(key) == [] and not s3_store.exists(key)
