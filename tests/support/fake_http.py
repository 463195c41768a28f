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
