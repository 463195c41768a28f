"""A loopback HTTP proxy in front of Azurite that answers as Azure Storage does where
Azurite 3.37 answers otherwise, so that the real SDK and the project's code can be tested
"as on Azure" without an account.

Everything is forwarded to Azurite unchanged; each rule sees a request and Azurite's
answer and may replace the answer with the one Azure gives. The rules are listed in
docs/azure.md ("Where Azurite and Azure Storage differ"). Use it in place of Azurite's port:

    with AzureStorageProxy(azurite.port) as proxy:
        settings = replace(settings, azurite_port=str(proxy.port))

`proxy.rewritten` records every answer a rule replaced, so a test can check that the
difference it is about did come up.
"""
from __future__ import annotations

import http.client
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

from workspace.settings import AZURITE_ACCOUNT, LOCAL_HOST, azurite_connection_string

# Hop-by-hop headers (RFC 9110 7.6.1) and the framing the proxy redoes itself.
HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
               "transfer-encoding", "upgrade", "content-length"}


@dataclass
class Exchange:
    """One request and the answer it is about to get (which a rule may replace)."""

    method: str
    target: str  # path and query, as sent
    path: str  # URL path, still encoded
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int = 0
    reason: str = ""
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def response_header(self, name: str) -> str | None:
        return next((v for k, v in self.response_headers if k.lower() == name.lower()), None)

    @property
    def error_code(self) -> str | None:
        return self.response_header("x-ms-error-code")

    def container_and_blob(self) -> tuple[str, str]:
        """(container, blob name) of a blob URL of the emulator's path-style form."""
        parts = unquote(self.path).lstrip("/").split("/", 2)
        if len(parts) < 3 or parts[0] != AZURITE_ACCOUNT:
            raise ValueError(f"not a blob path: {self.path}")
        return parts[1], parts[2]


def azure_error(exchange: Exchange, status: int, reason: str, code: str, message: str,
                service: str = "Blob") -> None:
    """Replace the answer with a Storage error as Azure sends it: the status with its
    reason phrase, the error code in the `x-ms-error-code` header (versions 2017-07-29 and
    later) and an XML body `<Error><Code/><Message/></Error>` whose message ends with the
    request id and time ("Status and error codes",
    learn.microsoft.com/rest/api/storageservices/status-and-error-codes2). Azure's XML
    starts with a UTF-8 byte order mark."""
    request_id = str(uuid.uuid4())
    now = datetime.now(timezone.utc)
    text = (f"{message}\nRequestId:{request_id}\n"
            f"Time:{now.strftime('%Y-%m-%dT%H:%M:%S.%f')}0Z")
    body = ('\ufeff<?xml version="1.0" encoding="utf-8"?><Error>'
            f"<Code>{code}</Code><Message>{text}</Message></Error>").encode("utf-8")
    headers = [("Content-Length", str(len(body))), ("Content-Type", "application/xml"),
               ("Server", f"Windows-Azure-{service}/1.0 Microsoft-HTTPAPI/2.0"),
               ("x-ms-request-id", request_id), ("x-ms-error-code", code),
               ("Date", formatdate(usegmt=True))]
    for name in ("x-ms-client-request-id", "x-ms-version"):
        value = exchange.response_header(name) or exchange.header(name)
        if value:
            headers.append((name, value))
    exchange.status, exchange.reason = status, reason
    exchange.response_headers, exchange.response_body = headers, body


Rule = Callable[["AzureStorageProxy", Exchange], bool]  # True when it replaced the answer


def lease_is_checked_before_existence(proxy: "AzureStorageProxy", exchange: Exchange) -> bool:
    """Put Blob with If-None-Match: * and no lease id, on a blob holding an active lease.

    Azure checks the lease before the condition: 412 LeaseIdMissing ("There is currently a
    lease on the blob and no lease ID was specified in the request.", Blob service error
    codes, learn.microsoft.com/rest/api/storageservices/blob-service-error-codes).
    Azurite 3.37 checks existence first: 409 BlobAlreadyExists (Azure/Azurite#2637)."""
    if not (exchange.method == "PUT" and "comp" not in exchange.query
            and exchange.header("if-none-match") == "*"
            and not exchange.header("x-ms-lease-id")
            and exchange.status == 409 and exchange.error_code == "BlobAlreadyExists"):
        return False
    if proxy.lease_state(*exchange.container_and_blob()) != "leased":
        return False
    azure_error(exchange, 412, "There is currently a lease on the blob and no lease ID was "
                "specified in the request.", "LeaseIdMissing",
                "There is currently a lease on the blob and no lease ID was specified in the "
                "request.")
    return True


def a_stale_pop_receipt_finds_no_message(proxy: "AzureStorageProxy",
                                         exchange: Exchange) -> bool:
    """Delete Message or Update Message with a pop receipt that is no longer valid (the
    message was received again, updated, or deleted since).

    Azure: 404 MessageNotFound, "The specified message does not exist." (Delete Message:
    "If a message with a matching pop receipt isn't found, the service returns error code
    404 (Not Found)", learn.microsoft.com/rest/api/storageservices/delete-message2; seen as
    such in Azure/azure-storage-net#285 and Azure/azure-storage-python#300). Azurite 3.37:
    400 PopReceiptMismatch."""
    if not (exchange.method in ("DELETE", "PUT") and "popreceipt" in exchange.query
            and exchange.status == 400 and exchange.error_code == "PopReceiptMismatch"):
        return False
    azure_error(exchange, 404, "The specified message does not exist.", "MessageNotFound",
                "The specified message does not exist.", service="Queue")
    return True


BLOB_RULES: tuple[Rule, ...] = (lease_is_checked_before_existence,)
QUEUE_RULES: tuple[Rule, ...] = (a_stale_pop_receipt_finds_no_message,)


class AzureStorageProxy:
    """`with AzureStorageProxy(azurite_port) as proxy:` an endpoint at proxy.port."""

    def __init__(self, upstream_port: int, rules: tuple[Rule, ...] = BLOB_RULES):
        self.upstream_port = upstream_port
        self.rules = rules
        self.rewritten: list[tuple[str, str, str]] = []  # (method, path, new error code)
        self._lock = threading.Lock()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer((LOCAL_HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"azure storage proxy :{self.port}", daemon=True)

    def start(self) -> "AzureStorageProxy":
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "AzureStorageProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ what the rules ask

    def lease_state(self, container: str, blob: str) -> str | None:
        """The blob's lease state as Azurite holds it (the real SDK, straight to Azurite)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import BlobClient

        upstream = f"http://{LOCAL_HOST}:{self.upstream_port}/{AZURITE_ACCOUNT}"
        client = BlobClient.from_connection_string(azurite_connection_string(upstream),
                                                   container, blob)
        try:
            return client.get_blob_properties().lease.state
        except ResourceNotFoundError:
            return None

    # ------------------------------------------------------------ forwarding

    def exchange(self, exchange: Exchange) -> Exchange:
        """Forward to Azurite and apply the rules; OSError when Azurite cannot be reached."""
        connection = http.client.HTTPConnection(LOCAL_HOST, self.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in exchange.headers.items() if k not in HOP_HEADERS}
            headers["content-length"] = str(len(exchange.body))
            connection.request(exchange.method, exchange.target, body=exchange.body,
                               headers=headers)
            response = connection.getresponse()
            exchange.status, exchange.reason = response.status, response.reason
            exchange.response_headers = response.getheaders()
            exchange.response_body = response.read()
        finally:
            connection.close()
        for rule in self.rules:
            if rule(self, exchange):
                with self._lock:
                    self.rewritten.append((exchange.method, unquote(exchange.path),
                                           exchange.error_code or ""))
                break
        return exchange


class _Handler(BaseHTTPRequestHandler):
    owner: AzureStorageProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self) -> None:
        split = urlsplit(self.path)
        exchange = Exchange(method=self.command, target=self.path, path=split.path,
                            query=parse_qs(split.query, keep_blank_values=True),
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=self._body())
        try:
            self.owner.exchange(exchange)
        except OSError:  # Azurite is gone: so is the endpoint, as the client sees it
            self.close_connection = True
            return
        self.send_response_only(exchange.status, exchange.reason)
        for name, value in exchange.response_headers:
            if name.lower() not in HOP_HEADERS:
                self.send_header(name, value)
        if self.command == "HEAD":
            length = next((v for k, v in exchange.response_headers
                           if k.lower() == "content-length"), "0")
        else:
            length = str(len(exchange.response_body))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(exchange.response_body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _forward
