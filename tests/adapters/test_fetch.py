"""SSRF-safe image download against real local HTTP(S) servers: allow-list, addresses, redirects, limits."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest

import raiox.adapters.fetch
from fakes import FileServer
from raiox.adapters.fetch import (
    TRANSIENT_FETCH_ERRORS,
    FetchFailed,
    FetchPolicy,
    FetchTimeout,
    FetchTooLarge,
    FetchUnavailable,
    UnsafeURL,
    check_url,
    check_url_statically,
    fetch,
)


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    server.files["a.bin"] = b"A" * 1000
    yield server
    server.close()


DEV = FetchPolicy(dev=True, timeout=5)
PROD = FetchPolicy(timeout=5)


def test_dev_fetches_loopback_and_follows_redirects(files: FileServer) -> None:
    assert fetch(files.url("/files/a.bin"), DEV) == b"A" * 1000
    assert fetch(files.url("/files/a.bin", host="localhost"), DEV) == b"A" * 1000
    assert fetch(files.url(f"/redirect?to={files.url('/files/a.bin')}"), DEV) == b"A" * 1000


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/files/a.bin",
    "https://127.0.0.1:{port}/files/a.bin",
    "http://localhost:{port}/files/a.bin",
    "http://[::1]:{port}/files/a.bin",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "file:///etc/passwd",
    "ftp://www.jotform.com/x.jpg",
    "gopher://127.0.0.1:{port}/",
    "https://www.jotform.com.attacker.example/x.jpg",
    "https://user:pass@www.jotform.com/x.jpg",
])
def test_prod_refuses_unsafe_urls_before_connecting(files: FileServer, url: str) -> None:
    with pytest.raises(UnsafeURL):
        fetch(url.format(port=files.port), PROD)
    assert files.requests == []


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "file:///etc/passwd",
    "http://10.0.0.1/x.jpg",
])
def test_dev_refuses_link_local_metadata_and_private_even_after_a_redirect(files: FileServer, target: str) -> None:
    with pytest.raises(UnsafeURL):
        fetch(target, DEV)
    with pytest.raises(UnsafeURL):
        fetch(files.url(f"/redirect?to={target}"), DEV)
    assert [r["path"] for r in files.requests] == ["/redirect"]  # the redirect target was never requested


def test_every_resolved_address_must_be_public() -> None:
    mixed = FetchPolicy(resolve=lambda host, port: ["93.184.216.34", "10.1.2.3"])
    with pytest.raises(UnsafeURL, match="private"):
        check_url("https://www.jotform.com/uploads/x.jpg", mixed)
    mapped = FetchPolicy(resolve=lambda host, port: ["::ffff:127.0.0.1"])
    with pytest.raises(UnsafeURL):
        check_url("https://www.jotform.com/uploads/x.jpg", mapped)
    public = FetchPolicy(resolve=lambda host, port: ["93.184.216.34"])
    hop = check_url("https://eu.jotform.com/uploads/x.jpg", public)
    assert hop.addresses == [ipaddress.ip_address("93.184.216.34")] and hop.host_header == "eu.jotform.com"


def test_allow_list_comes_from_settings() -> None:
    from raiox.settings import Settings

    settings = Settings(_env_file=None, spaces_endpoint="https://fra1.digitaloceanspaces.com",
                        fetch_allowed_hosts="images.example.org, cdn.example.net")
    policy = FetchPolicy.from_settings(settings)
    for host in ("hipaa.jotform.com", "bucket.fra1.digitaloceanspaces.com", "images.example.org", "a.cdn.example.net"):
        assert raiox.adapters.fetch.host_matches(host, policy.allowed_hosts), host
    assert not raiox.adapters.fetch.host_matches("example.org", policy.allowed_hosts)
    assert not policy.dev


def test_byte_cap_is_enforced_while_streaming(files: FileServer) -> None:
    small = FetchPolicy(dev=True, timeout=5, max_bytes=500)
    with pytest.raises(FetchTooLarge):
        fetch(files.url("/files/a.bin"), small)  # Content-Length says too much
    with pytest.raises(FetchTooLarge):
        fetch(files.url("/endless"), small)  # no Content-Length: stopped while streaming


def test_a_dripping_server_is_cut_off_at_the_deadline(files: FileServer) -> None:
    with pytest.raises(FetchTimeout):
        fetch(files.url("/drip"), FetchPolicy(dev=True, timeout=1))


def test_errors_say_whether_trying_again_can_help(files: FileServer) -> None:
    """Passing trouble (5xx, 408, 429, no connection) is FetchUnavailable, which the fetch step retries;
    what will not change (404, 410, a redirect loop) is FetchFailed."""
    for status in (500, 503, 408, 429):
        with pytest.raises(FetchUnavailable, match=f"HTTP {status}"):
            fetch(files.url(f"/status/{status}"), DEV)
    with pytest.raises(FetchUnavailable, match="cannot connect"):
        fetch("http://127.0.0.1:1/x.jpg", DEV)
    for status in (404, 410, 403):
        with pytest.raises(FetchFailed, match=f"HTTP {status}"):
            fetch(files.url(f"/status/{status}"), DEV)
    loop = files.url("/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/files/a.bin")
    with pytest.raises(FetchFailed, match="redirects"):
        fetch(loop, FetchPolicy(dev=True, timeout=5, max_redirects=1))
    assert not issubclass(FetchFailed, TRANSIENT_FETCH_ERRORS) and issubclass(FetchTimeout, TRANSIENT_FETCH_ERRORS)


def test_a_submission_deadline_cuts_every_download_short(files: FileServer) -> None:
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        fetch(files.url("/drip"), FetchPolicy(dev=True, timeout=30), deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 10  # the drip alone would take 200 s


def test_ipv6_transition_addresses_are_refused() -> None:
    for address in ("64:ff9b::7f00:1", "2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "::7f00:1"):
        policy = FetchPolicy(allowed_hosts=("images.example.org",), resolve=lambda host, port, a=address: [a])
        with pytest.raises(UnsafeURL, match="transition"):
            check_url("https://images.example.org/x.jpg", policy)


# Production mode over TLS, with "public" addresses routed to the local server -------------------------

def test_prod_https_pins_the_checked_address_and_verifies_the_name(tls_files: tuple[FileServer, FetchPolicy]) -> None:
    server, policy = tls_files
    assert fetch(server.url("/uploads/x.bin", host="files.jotform.com"), policy) == b"X" * 100
    request = server.requests[-1]
    assert request["headers"]["host"] == f"files.jotform.com:{server.port}"
    assert request["query"]["apiKey"] == ["jf-secret-key"]  # a submission's file on a Jotform host gets the key
    assert fetch(server.url("/files/x.bin", host="files.jotform.com"), policy) == b"X" * 100
    assert "apiKey" not in server.requests[-1]["query"]  # any other page of a Jotform host does not
    with pytest.raises(FetchFailed, match="TLS"):
        fetch(server.url("/files/x.bin", host="other.example.org"), policy)  # certificate is not for it


def test_prod_api_key_never_leaves_jotform_and_redirects_are_rechecked(
    tls_files: tuple[FileServer, FetchPolicy],
) -> None:
    server, policy = tls_files
    elsewhere = server.url("/uploads/x.bin", host="images.example.org")
    assert fetch(server.url(f"/uploads/x.bin?to={elsewhere}", host="files.jotform.com"), policy) == b"X" * 100
    assert server.requests[-1]["query"].get("apiKey") == ["jf-secret-key"]
    assert fetch(server.url(f"/redirect?to={elsewhere}", host="files.jotform.com"), policy) == b"X" * 100
    assert [r["query"].get("apiKey") for r in server.requests[-2:]] == [None, None]  # never beyond Jotform
    count = len(server.requests)
    for target in (f"https://localhost:{server.port}/files/x.bin", f"http://127.0.0.1:{server.port}/files/x.bin",
                   f"https://[::1]:{server.port}/files/x.bin"):
        with pytest.raises(UnsafeURL):
            fetch(server.url(f"/redirect?to={target}", host="files.jotform.com"), policy)
    assert len(server.requests) == count + 3  # each redirect answered, none of its loopback targets fetched
    assert all(r["path"] == "/redirect" for r in server.requests[count:])


def test_prod_refuses_plain_http_even_to_allowed_hosts(tls_files: tuple[FileServer, FetchPolicy]) -> None:
    _, policy = tls_files
    with pytest.raises(UnsafeURL, match="https"):
        fetch("http://files.jotform.com/uploads/x.jpg", policy)



def test_ipv4_translated_addresses_are_refused_like_every_transition_range() -> None:
    for address in ("::ffff:0:7f00:1", "::ffff:0:a00:1", "::ffff:0:a9fe:a9fe"):  # 127.0.0.1, 10.0.0.1, metadata
        policy = FetchPolicy(resolve=lambda host, port, a=address: [a])
        with pytest.raises(UnsafeURL, match="transition"):
            check_url("https://www.jotform.com/uploads/x.jpg", policy)


def test_only_port_443_outside_dev_loopback() -> None:
    public = FetchPolicy(resolve=lambda host, port: ["93.184.216.34"])
    for url in ("https://www.jotform.com:8443/uploads/x.jpg", "https://www.jotform.com:22/uploads/x.jpg"):
        with pytest.raises(UnsafeURL, match=r"port \d+ is not fetched from \(only 443\)"):
            check_url_statically(url, public)  # refused at intake, without a DNS lookup
    assert check_url("https://www.jotform.com:443/uploads/x.jpg", public).port == 443
    assert check_url("http://localhost:8123/x.jpg", FetchPolicy(dev=True)).port == 8123  # the simulator's files
    with pytest.raises(UnsafeURL, match="port 8443"):
        check_url("https://www.jotform.com:8443/uploads/x.jpg", FetchPolicy(dev=True, resolve=public.resolve))


@pytest.mark.parametrize("path", ["/uploads/../form/123/edit", "/uploads/%2e%2e/settings", "/uploads/%252e%252e/x",
                                  "/uploads/a/..%2f..%2fapi", "/uploads/..\\secret", "/uploads/./x.jpg"])
def test_paths_that_climb_are_refused_before_any_request(path: str) -> None:
    with pytest.raises(UnsafeURL, match=r"path climbs \(a \. or \.\. segment\)"):
        check_url_statically(f"https://www.jotform.com{path}", PROD)


def test_the_api_key_goes_only_to_a_normalised_upload_path(tls_files: tuple[FileServer, FetchPolicy]) -> None:
    server, policy = tls_files
    assert "apiKey=jf-secret-key" in check_url(server.url("/uploads//a/x.bin", host="files.jotform.com"), policy).target
    for elsewhere in ("/uploadsX/x.bin", "/%75ploads-not/x.bin", "/form/uploads/x.bin"):
        assert "apiKey" not in check_url(server.url(elsewhere, host="files.jotform.com"), policy).target
