"""Stand-ins for the servers Raiox talks to, on real loopback HTTP(S): a file host with misbehaviours, and a
scripted server playing Jotform's API, a webhook receiver or embed."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import raiox.adapters.fetch
from raiox.adapters.fetch import FetchPolicy

JOTFORM_OK = {"responseCode": 200, "message": "success", "limit-left": 987,
              "content": {"submissionID": "x", "URL": "https://www.jotform.com/submission/x",
                          "answers_echo": "a long body that is never stored"}}

class FileServer:
    """A local server with test files and misbehaviours; records each request's path, query and headers.

    /files/<name>        the bytes in `files[name]` (also at /uploads/<name>, where Jotform serves uploads)
    /redirect?to=<url>   302 to <url>
    /drip                declares 1000 bytes, sends one every 0.2 s
    /endless             sends 64 KiB chunks until the client hangs up (no Content-Length)
    /status/<code>       an empty answer with that status
    /flaky/<n>/<name>    503 for the first n requests of this path, then the bytes in `files[name]`
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.tries: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                owner.requests.append({"path": url.path, "query": parse_qs(url.query),
                                       "headers": {k.lower(): v for k, v in self.headers.items()}})
                try:
                    self._answer(url.path, parse_qs(url.query))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _answer(self, path: str, query: dict[str, list[str]]) -> None:
                if path.startswith("/flaky/"):
                    failures, name = path[len("/flaky/"):].split("/", 1)
                    with owner.lock:
                        owner.tries[path] = tries = owner.tries.get(path, 0) + 1
                    path = "/status/503" if tries <= int(failures) else f"/files/{name}"
                name = path.removeprefix("/files/").removeprefix("/uploads/")
                if path.startswith(("/files/", "/uploads/")) and name in owner.files:
                    data = owner.files[name]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", query["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/drip":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    while not owner.stop.wait(0.2):
                        self.wfile.write(b"\xff")
                        self.wfile.flush()
                elif path == "/endless":
                    self.send_response(200)
                    self.end_headers()
                    self.close_connection = True
                    while not owner.stop.is_set():
                        self.wfile.write(b"\0" * 65536)
                elif path.startswith("/status/"):
                    self.send_response(int(path[8:]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_error(404)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        self.scheme = "https" if tls else "http"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


PUBLIC_IP = "93.184.216.34"


@contextmanager
def tls_file_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FileServer, FetchPolicy]]:
    """An https server with a certificate for files.jotform.com and images.example.org, reached in prod
    mode as if those names resolved to a public address (the test's network routes it to loopback)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raiox test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("files.jotform.com"), x509.DNSName("images.example.org")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = FileServer(tls=context)
    server.files["x.bin"] = b"X" * 100

    real_pool = raiox.adapters.fetch._pool

    def routed_pool(hop: Any, address: Any, policy: FetchPolicy) -> Any:
        assert str(address) == PUBLIC_IP  # only ever connects to the address that was checked
        return real_pool(hop, ipaddress.ip_address("127.0.0.1"), policy)

    monkeypatch.setattr(raiox.adapters.fetch, "_pool", routed_pool)
    policy = FetchPolicy(
        allowed_hosts=("jotform.com", "jotformeu.com", "images.example.org", "other.example.org"),
        timeout=5, jotform_api_key="jf-secret-key", ca_bundle=str(cert_path),
        resolve=lambda host, port: ["127.0.0.1"] if host == "localhost" else [PUBLIC_IP],
        allowed_ports=(443, server.port),  # the test server's port stands in for 443
    )
    try:
        yield server, policy
    finally:
        server.close()


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: JOTFORM_OK)
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the test ends): the client's timeout must fire


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeServer:
    """Plays Jotform (or a webhook receiver, or embed) on 127.0.0.1: scripted replies first, then `default`.
    With `api_key` set, a request without that APIKEY header gets Jotform's 401 (echoing the key it got)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: list[Reply] = []
        self.default = Reply()
        self.api_key: str | None = None
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append(Recorded(self.command, self.path,
                                              {k.lower(): v for k, v in self.headers.items()}, body))
                if fake.api_key is not None and self.headers.get("APIKEY") != fake.api_key:
                    reply = Reply(401, {"responseCode": 401, "content": "",
                                        "message": f"You're not authorized: invalid key {self.headers.get('APIKEY')}"})
                else:
                    reply = fake.script.pop(0) if fake.script else fake.default
                if reply.hang:
                    fake.release.wait(30)
                    return
                data = reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def will(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class OutageProxy:
    """A TCP forwarder to `target_port` on loopback that can be cut: while `down`, every connection is closed
    as soon as it arrives (and open ones are dropped), as when a service goes away; nothing it held is lost."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()
            with self._lock:
                self._open.difference_update((source, sink))

    def cut(self) -> None:
        self.down.set()
        with self._lock:
            for connection in list(self._open):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()
