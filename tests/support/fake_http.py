"""What the Azure service fakes share: an azure-core transport that records every request
the real SDK clients send and answers from a `_route` of the subclass, a fixed-token
credential, and the response plumbing of azure-core's requests transport."""
from __future__ import annotations

import io
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qs, unquote, urlparse

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline._tools import is_rest
from azure.core.pipeline.transport import HttpTransport
from azure.core.pipeline.transport._requests_basic import RequestsTransportResponse
from azure.core.rest._requests_basic import RestRequestsTransportResponse

ROUTE_MISSING = "FakeRouteMissing"
REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
           404: "Not Found"}


class StaticTokenCredential:
    """A token credential with a fixed bearer token; records the scopes asked for."""

    def __init__(self, error: Exception | None = None):
        self.scopes: list[tuple[str, ...]] = []
        self.error = error

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        if self.error is not None:
            raise self.error
        return AccessToken("fake-token", int(datetime.now(timezone.utc).timestamp()) + 3600)


@dataclass
class Recorded:
    method: str
    url: str
    host: str
    path: str
    query: dict
    body: object
    headers: dict = field(default_factory=dict)
    raw: bytes = b""
    missing: bool = False  # no route of the fake answered it

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


class RecordingTransport(HttpTransport):
    """Subclasses implement `_route(record) -> (status, payload, headers)`."""

    def __init__(self):
        self.requests: list[Recorded] = []
        self.failures: list[tuple[str, re.Pattern, int, str, str, dict]] = []
        self._lock = threading.Lock()

    def fail(self, method: str, path_regex: str, status: int, code: str, message: str,
             headers: dict | None = None) -> None:
        """The next matching request gets this error instead of its answer."""
        self.failures.append((method.upper(), re.compile(path_regex, re.I), status, code, message,
                              headers or {}))

    def missing_routes(self) -> list[Recorded]:
        return [r for r in self.requests if r.missing]

    def error_payload(self, record: Recorded, code: str, message: str):
        return {"error": {"code": code, "message": message}}

    def _route(self, record: Recorded):
        raise NotImplementedError

    def open(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass

    def send(self, request, **kwargs):
        url = urlparse(request.url)
        raw = _raw(request)
        record = Recorded(request.method.upper(), request.url, url.hostname or "",
                          unquote(url.path), {k: v[0] for k, v in parse_qs(url.query).items()},
                          _json_or_text(raw), {k.lower(): v for k, v in request.headers.items()},
                          raw)
        with self._lock:
            self.requests.append(record)
            for i, (method, pattern, status, code, message, extra) in enumerate(self.failures):
                if method == record.method and pattern.search(record.path):
                    del self.failures[i]
                    return respond(request, status, self.error_payload(record, code, message),
                                   {"x-ms-error-code": code, **extra})
            status, payload, headers = self._route(record)
        record.missing = (status == 404 and isinstance(payload, dict)
                          and payload.get("error", {}).get("code") == ROUTE_MISSING)
        return respond(request, status, payload, headers)


def missing(r: Recorded):
    return 404, {"error": {"code": ROUTE_MISSING, "message": f"{r.method} {r.url}"}}, {}


def respond(request, status: int, payload, headers: dict | None = None):
    """The response azure-core's requests transport would hand back."""
    response = requests.Response()
    response.status_code = status
    response.reason = REASONS.get(status, "Error")
    content = b"" if payload is None else (
        payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    if request.method.upper() == "HEAD":
        content = b""
    response._content = content
    response._content_consumed = True
    response.raw = io.BytesIO(content)
    response.headers.update({"Content-Type": "application/json",
                             "x-ms-request-id": str(uuid.uuid4()), **(headers or {})})
    response.url = request.url
    if is_rest(request):  # what RequestsTransport does for azure.core.rest requests
        response_ = RestRequestsTransportResponse(request=request, internal_response=response)
        response_.read()
        return response_
    return RequestsTransportResponse(request, response)


def _raw(request) -> bytes:
    data = getattr(request, "content", None)
    if data is None:
        data = getattr(request, "data", None) or getattr(request, "body", None)
    if data is None:
        return b""
    if hasattr(data, "read"):
        data = data.read()
    elif not isinstance(data, (bytes, str)) and hasattr(data, "__iter__"):
        data = b"".join(data)
    return data.encode() if isinstance(data, str) else bytes(data)


def _json_or_text(raw: bytes):
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return raw.decode(errors="replace")


class StorageTunnel:
    """An HTTPS proxy for SDK code that builds its own storage URL from a datastore
    (`https://<account>.blob.<cloud suffix>`, azure-ai-ml's STORAGE_ACCOUNT_URLS) and opens its
    own client: with HTTPS_PROXY and REQUESTS_CA_BUNDLE from `env()`, requests tunnels there
    (CONNECT); the tunnel ends TLS with a certificate for the host from a throwaway test CA
    and pipes the bytes to Azurite, which reads the account from the Host header
    (production-style URL). Nothing of the SDK is replaced."""

    def __init__(self, upstream_port: int, hosts: list[str], workdir):
        import socket
        import ssl
        from pathlib import Path

        self.upstream_port = upstream_port
        self.hosts = {h.lower() for h in hosts}
        self.tunnels: list[str] = []  # CONNECT targets, in order
        self.ca_file, cert_file, key_file = _test_certificates(Path(workdir), sorted(self.hosts))
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert_file, key_file)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def env(self) -> dict[str, str]:
        return {"HTTPS_PROXY": f"http://127.0.0.1:{self.port}", "REQUESTS_CA_BUNDLE": str(self.ca_file)}

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client) -> None:
        import socket

        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target = head.split(b" ", 2)[:2]
            host = target.decode().rsplit(":", 1)[0].lower()
            if method != b"CONNECT" or host not in self.hosts:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            self.tunnels.append(host)
            client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            with self._context.wrap_socket(client, server_side=True) as tls, \
                    socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
                _pipe(tls, upstream)


def _pipe(tls, upstream) -> None:
    import select

    while True:
        ready = [tls] if tls.pending() else select.select([tls, upstream], [], [], 30)[0]
        if not ready:
            return
        for sock in ready:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            (upstream if sock is tls else tls).sendall(data)


def _test_certificates(workdir, hosts: list[str]):
    """A CA and a server certificate for `hosts` signed by it (PEM files in workdir)."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(timezone.utc)

    def build(subject, issuer, public_key, signing_key, ca: bool, sans=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False), critical=True)
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(h) for h in sans]), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test storage CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    leaf = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]), ca_name,
                 key.public_key(), ca_key, False, hosts)
    pem = serialization.Encoding.PEM
    files = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    files[0].write_bytes(ca.public_bytes(pem))
    files[1].write_bytes(leaf.public_bytes(pem))
    files[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return files
