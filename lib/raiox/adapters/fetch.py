"""Downloading an image from a URL a caller gave us, without letting the URL reach what it should not (SSRF).

Every hop (the first request and each redirect) is checked before it is made: https only, port 443 only, host on
the allow-list, a path without `.` or `..` segments, and every address the host resolves to public. The connection
then goes to the address that was checked (TLS still verifies the certificate for the host name), so a second DNS
answer cannot swap in an internal address. Timeouts bound each wait and an overall deadline bounds the whole
download; the byte cap is enforced while streaming. `dev` mode (RAIOX_ENV=dev) also admits hosts that resolve only
to loopback, over http or https and on any port, for the simulator; link-local and metadata addresses are refused
in every mode.
"""

from __future__ import annotations

import ipaddress
import posixpath
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlencode, urljoin, urlsplit

import certifi
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError as Urllib3SSLError

from raiox.errors import TooLarge, Unprocessable
from raiox.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Jotform serves uploads from its own domains (www., eu., hipaa. …); only these ever see JOTFORM_API_KEY.
JOTFORM_DOMAINS = ("jotform.com", "jotformeu.com")
_ALWAYS_REFUSED = (
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, cloud metadata (169.254.169.254)
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IPv6 metadata
)
# IPv6 ranges that carry an IPv4 address (or tunnel to one) and so can reach a private network although
# Python calls some of them global: NAT64, 6to4, Teredo, IPv4-compatible.
_TRANSITION = (
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("64:ff9b:1::/48"),
    ipaddress.ip_network("2002::/16"),
    ipaddress.ip_network("2001::/32"),
    ipaddress.ip_network("::/96"),
    ipaddress.ip_network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT): Python calls it global
)
HTTPS_PORT = 443
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024


class FetchError(Unprocessable):
    """An image URL that could not be downloaded; the message says why."""


class UnsafeURL(FetchError):
    """The URL (or a redirect) points somewhere we refuse to go: scheme, host or address."""


class FetchTooLarge(TooLarge, FetchError):
    """The download exceeded the byte cap."""


class FetchTimeout(FetchError):
    """The server was too slow: connect or read timeout, or the overall deadline passed."""


class FetchFailed(FetchError):
    """The server did not answer with the file (404, 410, another 4xx, a redirect loop): trying again will
    not help."""


class FetchUnavailable(FetchError):
    """The server could not be reached, or answered 5xx, 408 or 429: trying again later may help."""


# What a fetch step may retry: the network, the server's mood, a slow answer.
TRANSIENT_FETCH_ERRORS = (FetchTimeout, FetchUnavailable)
UPLOAD_PATH = "/uploads/"  # where Jotform serves a submission's files; the API key goes nowhere else


def split_list(value: str) -> list[str]:
    """A comma-separated setting as a list of its non-empty, trimmed items."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class FetchPolicy:
    """Where downloads may go and how long and large they may be."""

    allowed_hosts: tuple[str, ...] = JOTFORM_DOMAINS  # each admits itself and its subdomains
    dev: bool = False
    max_bytes: int = 25 * 1024 * 1024
    timeout: float = 10.0
    max_redirects: int = 5
    jotform_api_key: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None  # None: certifi's CA bundle
    # Ports a download may use outside dev mode's loopback. Only 443: a film host on another port is not a web
    # server's front door (and an allowed host's other services stay out of reach). Tests add their server's.
    allowed_ports: tuple[int, ...] = (HTTPS_PORT,)
    resolve: Resolver = field(default=_resolve, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        hosts = [*JOTFORM_DOMAINS, *split_list(settings.fetch_allowed_hosts)]
        if settings.spaces_endpoint and (spaces := urlsplit(settings.spaces_endpoint).hostname):
            hosts.append(spaces)  # also admits virtual-hosted buckets and the CDN under it
        return cls(
            allowed_hosts=tuple(dict.fromkeys(host.lower().strip(".") for host in hosts)),
            dev=settings.is_dev,
            max_bytes=settings.fetch_max_bytes,
            timeout=settings.fetch_timeout_seconds,
            jotform_api_key=settings.jotform_api_key.get_secret_value() if settings.jotform_api_key else None,
        )


def host_matches(host: str, domains: Sequence[str]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def _address(text: str) -> IPAddress:
    ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class _Hop:
    scheme: str
    host: str
    port: int
    addresses: list[IPAddress]
    target: str  # path and query sent in the request line
    host_header: str


def check_url_statically(url: str, policy: FetchPolicy) -> None:
    """What can be refused without a DNS lookup: scheme, host, credentials, port, the allow-list (outside dev
    mode); UnsafeURL otherwise. `check_url` does this and then checks every address the host resolves to."""
    _static_parts(url, policy)


def _static_parts(url: str, policy: FetchPolicy) -> tuple[str, str, int, bool]:
    """(scheme, host, port, whether the host is on the allow-list) of a URL, or UnsafeURL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL(f"{scheme or 'scheme-less'} URLs are not fetched")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeURL("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("URLs with credentials are not fetched")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL("the URL has an invalid port") from None
    _check_path(parts.path)
    allowed = host_matches(host, policy.allowed_hosts)
    if not allowed and not policy.dev:  # refuse before any DNS lookup
        raise UnsafeURL(f"host {host} is not on the allow-list")
    if not policy.dev:  # dev mode decides once it knows whether the host is loopback
        if scheme != "https":
            raise UnsafeURL("only https URLs are fetched")
        if port not in policy.allowed_ports:
            raise UnsafeURL(f"port {port} is not fetched from (only {', '.join(map(str, policy.allowed_ports))})")
    return scheme, host, port, allowed


def _check_path(path: str) -> None:
    """A film's URL path never climbs: `.` and `..` segments (also percent-encoded, or behind a backslash) are
    refused, so the path a server sees is the one checked (e.g. Jotform's `/uploads/`, which alone gets the API
    key)."""
    decoded = unquote(unquote(path)).replace("\\", "/")
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise UnsafeURL("the URL's path climbs (a . or .. segment)")


def check_url(url: str, policy: FetchPolicy) -> _Hop:
    """Refuse (UnsafeURL) a URL this policy does not allow; return where to connect for it."""
    scheme, host, port, allowed = _static_parts(url, policy)
    parts = urlsplit(url)
    try:
        addresses = [_address(a) for a in policy.resolve(host, port)]
    except (OSError, UnicodeError, ValueError):
        raise FetchUnavailable(f"cannot resolve host {host}") from None
    if not addresses:
        raise FetchUnavailable(f"cannot resolve host {host}")
    for ip in addresses:
        if any(ip in network for network in _ALWAYS_REFUSED):
            raise UnsafeURL(f"host {host} resolves to a link-local or metadata address")
        if not ip.is_loopback and any(ip in network for network in _TRANSITION):
            raise UnsafeURL(f"host {host} resolves to an IPv6 transition address")
    if not (policy.dev and all(ip.is_loopback for ip in addresses)):
        if not allowed:
            raise UnsafeURL(f"host {host} is not on the allow-list")
        if scheme != "https":
            raise UnsafeURL("only https URLs are fetched")
        if port not in policy.allowed_ports:
            raise UnsafeURL(f"port {port} is not fetched from (only {', '.join(map(str, policy.allowed_ports))})")
        if not all(ip.is_global for ip in addresses):
            raise UnsafeURL(f"host {host} resolves to a private or reserved address")
    query = parts.query
    if (policy.jotform_api_key and scheme == "https" and host_matches(host, JOTFORM_DOMAINS)
            and posixpath.normpath(unquote(parts.path)).startswith(UPLOAD_PATH)):
        # Uploads that need login accept the key as `apiKey`, as Jotform's API does; only a submission's
        # files under /uploads/ ever get it, never another page of a Jotform host.
        query = "&".join(filter(None, [query, urlencode({"apiKey": policy.jotform_api_key})]))
    name = f"[{host}]" if ":" in host else host
    default_port = 443 if scheme == "https" else 80
    return _Hop(
        scheme=scheme,
        host=host,
        port=port,
        addresses=addresses,
        target=(parts.path or "/") + (f"?{query}" if query else ""),
        host_header=name if port == default_port else f"{name}:{port}",
    )


def _pool(hop: _Hop, address: IPAddress, policy: FetchPolicy) -> urllib3.HTTPConnectionPool:
    if hop.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            str(address), hop.port, maxsize=1, retries=False,
            cert_reqs="CERT_REQUIRED", ca_certs=policy.ca_bundle or certifi.where(),
            server_hostname=hop.host, assert_hostname=hop.host,  # SNI and certificate check use the name
        )
    return urllib3.HTTPConnectionPool(str(address), hop.port, maxsize=1, retries=False)


def _open(
    hop: _Hop, policy: FetchPolicy, deadline: float
) -> tuple[urllib3.HTTPConnectionPool, urllib3.BaseHTTPResponse]:
    """Request `hop` from the first of its checked addresses that accepts a connection."""
    error: Exception | None = None
    for address in hop.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        pool = _pool(hop, address, policy)
        wait = min(policy.timeout, remaining)
        try:
            response = pool.urlopen(
                "GET", hop.target,
                headers={"Host": hop.host_header, "User-Agent": "raiox-intake", "Accept-Encoding": "identity"},
                redirect=False, retries=False, preload_content=False, decode_content=False,
                assert_same_host=False, timeout=urllib3.Timeout(connect=wait, read=wait),
            )
            return pool, response
        except (NewConnectionError, ConnectTimeoutError) as exc:
            pool.close()
            error = exc
        except BaseException:
            pool.close()
            raise
    if isinstance(error, NewConnectionError):  # refused or unreachable (a subclass of the timeout error)
        raise FetchUnavailable(f"cannot connect to {hop.host}")
    raise FetchTimeout(f"connecting to {hop.host} timed out")


def _read_body(response: urllib3.BaseHTTPResponse, host: str, policy: FetchPolicy, deadline: float) -> bytes:
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > policy.max_bytes:
        raise FetchTooLarge(f"the file from {host} is larger than {policy.max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchTimeout(f"downloading from {host} took longer than {policy.timeout:g} s")
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:  # a server that drips bytes must not outlive the deadline
            sock.settimeout(min(policy.timeout, remaining))
        chunk = response.read1(_CHUNK, decode_content=False)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > policy.max_bytes:
            raise FetchTooLarge(f"the file from {host} is larger than {policy.max_bytes} bytes")
        chunks.append(chunk)


def fetch(url: str, policy: FetchPolicy, *, deadline: float | None = None) -> bytes:
    """The bytes at `url`, following up to `policy.max_redirects` redirects, each one checked; within
    `policy.timeout` and, when given, the overall `deadline` (a `time.monotonic()` value) of a whole submission.

    Raises UnsafeURL, FetchTooLarge, FetchTimeout, FetchUnavailable or FetchFailed (all FetchError)."""
    deadline = min(time.monotonic() + policy.timeout, deadline if deadline is not None else float("inf"))
    current = url
    for _ in range(policy.max_redirects + 1):
        hop = check_url(current, policy)
        try:
            pool, response = _open(hop, policy, deadline)
            try:
                if response.status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise FetchFailed(f"{hop.host} answered a redirect without a Location")
                    current = urljoin(current, location)
                    continue
                if response.status in (408, 429) or response.status >= 500:
                    raise FetchUnavailable(f"{hop.host} answered HTTP {response.status}")
                if response.status != 200:
                    raise FetchFailed(f"{hop.host} answered HTTP {response.status}")
                return _read_body(response, hop.host, policy, deadline)
            finally:
                response.release_conn()
                pool.close()
        except (ReadTimeoutError, TimeoutError):
            raise FetchTimeout(f"{hop.host} did not answer within {policy.timeout:g} s") from None
        except Urllib3SSLError:
            raise FetchFailed(f"TLS with {hop.host} failed (certificate not valid for the host?)") from None
        except (Urllib3Error, OSError) as exc:
            raise FetchUnavailable(f"downloading from {hop.host} failed: {type(exc).__name__}") from None
    raise FetchFailed(f"more than {policy.max_redirects} redirects")
