"""Two ASGI guards in front of the app: a hard request-body limit and a cross-site POST check.

* The body limit holds for every request, also chunked ones that carry no Content-Length:
  those are read here up to the limit (then refused with 413) and replayed to the app, so an
  oversized upload never reaches the multipart parser's temporary files.
* A POST whose ``Origin`` names a host outside the allowed ones is refused (403): a web page the
  user happens to visit cannot create sessions (pushing real ones out of the LRU) or upload.
  The Host-header check against DNS rebinding stays with Starlette's TrustedHostMiddleware.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit


async def _reply(send, status: int, text: str) -> None:
    body = json.dumps({"error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Guards:
    def __init__(self, app, max_body: int, allowed_hosts: list[str]) -> None:
        self.app, self.max_body = app, max_body
        self.hosts = {h.strip("[]").lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        too_big = f"upload too large: the limit is {self.max_body // 2**20} MB"
        if scope["method"] == "POST" and "origin" in headers and "*" not in self.hosts:
            host = (urlsplit(headers["origin"]).hostname or "").lower()
            if host not in self.hosts:
                return await _reply(send, 403, f"requests from {headers['origin']} are not accepted")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body:
                return await _reply(send, 413, too_big)
            return await self.app(scope, receive, send)
        if scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True  # chunked: read it all here, within the limit
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.max_body:
                return await _reply(send, 413, too_big)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
