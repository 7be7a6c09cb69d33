"""The gateway side of the CodeArts stand-in (FakeCodeArts): IAM password login and the
API gateway's checks on every CodeArts request (``X-Auth-Token``, or an AK/SK signature
the stand-in re-computes with its own implementation of the signing algorithm).

``Gateway`` is a mixin: FakeCodeArts holds the users, tokens and keys it reads. The
gateway keeps the wall clock (``time.time``): it checks the bot's credentials, and the
bot's auth reads the wall clock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None when empty or not JSON
    raw: bytes
    time: float  # time.monotonic() on arrival



class Gateway:
    """IAM login and the gateway's auth checks, on the state FakeCodeArts keeps."""

    user: str
    domain: str
    project_name: str
    project_id: str
    token_lifetime: float
    clock_skew: float
    logins: int
    _lock: threading.Lock
    _tokens: dict[str, float]  # token -> expires (epoch)
    _users: dict[tuple[str, str], str]
    _aksk: dict[str, str]
    _iam_down: bool

    def _login(self, req: RecordedRequest) -> tuple[int, Any, dict[str, str]]:
        if self._iam_down:
            return 503, _iam_error(503, "Service Unavailable", "The service is unavailable."), {}
        try:
            user = req.body["auth"]["identity"]["password"]["user"]
            key = (user["domain"]["name"], user["name"])
            password, scope = user["password"], req.body["auth"]["scope"]["project"]["name"]
        except (KeyError, TypeError):
            return 400, _iam_error(400, "Bad Request", "The request body is invalid."), {}
        with self._lock:
            if self._users.get(key) != password:
                return 401, _iam_error(401, "Unauthorized",
                                       "The username or password is wrong."), {}
            if scope != self.project_name:
                return 400, _iam_error(400, "Bad Request", "The project does not exist."), {}
            token = "MIIfake" + secrets.token_hex(24)
            self._tokens[token] = time.time() + self.token_lifetime
            self.logins += 1
        return 201, self._token_body(), {"X-Subject-Token": token}

    def _token_body(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
        return {"token": {
            "expires_at": (now + timedelta(seconds=self.token_lifetime)).strftime(fmt),
            "issued_at": now.strftime(fmt), "methods": ["password"],
            "project": {"id": self.project_id, "name": self.project_name},
            "user": {"name": self.user, "domain": {"name": self.domain}}}}

    def _check_auth(self, req: RecordedRequest) -> str | None:
        """None if the request may pass the gateway, else the gateway's complaint."""
        authz = req.headers.get("authorization", "")
        if authz.startswith("SDK-HMAC-SHA256 "):
            return self._check_signature(req, authz)
        token = req.headers.get("x-auth-token")
        if not token:
            return "x-auth-token not found"
        with self._lock:
            expires = self._tokens.get(token)
        if expires is None:
            return "verify token fail"
        return "token expires" if time.time() >= expires else None

    def _check_signature(self, req: RecordedRequest, authz: str) -> str | None:
        fields = dict(part.strip().split("=", 1)
                      for part in authz[len("SDK-HMAC-SHA256 "):].split(","))
        with self._lock:
            sk = self._aksk.get(fields.get("Access", ""))
        names = fields.get("SignedHeaders", "").split(";")
        date = req.headers.get("x-sdk-date", "")
        if sk is None:
            return "verify aksk signature fail (unknown access key)"
        if "host" not in names or "x-sdk-date" not in names:
            return "verify aksk signature fail (host and x-sdk-date must be signed)"
        try:
            signed_at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return "verify aksk signature fail (bad X-Sdk-Date)"
        if abs(time.time() - signed_at.timestamp()) > self.clock_skew:
            return "verify aksk signature fail (X-Sdk-Date too far from now)"
        if req.headers.get("x-project-id") != self.project_id:
            return "x-project-id is missing or wrong"
        expected = _fake_signature(req, names, sk)
        return None if hmac.compare_digest(expected, fields.get("Signature", "")) else \
            "verify aksk signature fail"


def _iam_error(code: int, title: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "title": title}}



def _fake_signature(req: RecordedRequest, names: list[str], sk: str) -> str:
    """The SDK-HMAC-SHA256 signature, written from its description independently of
    bot.codearts.auth.

    The path and query are read as they arrived, percent-decoded the RFC 3986 way: a
    ``+`` in the query is a plus sign, not a space (the SDK never sends one for a space).
    """
    def enc(s: str) -> str:
        return quote(s, safe="~")

    segments = [enc(unquote(s)) for s in req.path.split("/")]
    uri = "/".join(segments)
    if not uri.endswith("/"):
        uri += "/"
    pairs = sorted((unquote(k), unquote(v)) for k, _, v in
                   (item.partition("=") for item in req.query.split("&") if item))
    query = "&".join(enc(k) + "=" + enc(v) for k, v in pairs)
    header_lines = "".join(n + ":" + req.headers.get(n, "").strip() + "\n" for n in sorted(names))
    canonical = "\n".join([req.method, uri, query, header_lines, ";".join(sorted(names)),
                           hashlib.sha256(req.raw).hexdigest()])
    string_to_sign = "\n".join(["SDK-HMAC-SHA256", req.headers.get("x-sdk-date", ""),
                                hashlib.sha256(canonical.encode()).hexdigest()])
    return hmac.new(sk.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
