"""OCSP over HTTP (RFC 6960 Appendix A, RFC 5019 §5-6): an aiohttp application around an
:class:`~certs.ocsp.OCSPResponder`, and a small server runner.

Behaviour at the HTTP edge (each has a test):

* ``POST`` (any path) with ``Content-Type: application/ocsp-request`` and the DER request
  as the body; ``GET {path}/{url-encoded base64 of the DER request}`` (RFC 6960 A.1).
* Anything that reaches the responder as an OCSP request but is not a good one — bad DER,
  bad base64, an empty body, a body over ``max_request_bytes`` (64 KiB by default, which
  is never read past that bound) — is answered with HTTP 200 and an OCSP
  ``malformedRequest`` response, which is what RFC 6960 A.1 clients expect to parse.
* A ``POST`` whose content type is not ``application/ocsp-request`` is refused with
  HTTP 415 and a one-line plain-text body: it was not an OCSP request at all, so there is
  nothing for an OCSP client to parse. Other methods get aiohttp's 405.
* Every OCSP answer has ``Content-Type: application/ocsp-response``. A successful ``GET``
  answer without a nonce is cacheable as RFC 5019 §6.2 describes (``max-age`` up to
  ``nextUpdate``, ``public, no-transform, must-revalidate``, ``Last-Modified``,
  ``Expires``); everything else is ``Cache-Control: no-store``.
* No exception text or stack trace ever goes over the wire: an unexpected failure is
  logged and answered with a bare HTTP 500.

Signing runs directly on the event loop: an EC P-256 signature costs tens of
microseconds and the status lookup is one SQLite primary-key read, so a thread hop
would cost more than it saves.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from email.utils import format_datetime
from typing import Final

from aiohttp import web
from cryptography.x509 import ocsp

from certs.ocsp import OCSPAnswer, OCSPResponder

__all__ = [
    "MAX_REQUEST_BYTES",
    "OCSP_REQUEST_TYPE",
    "OCSP_RESPONSE_TYPE",
    "OCSPServer",
    "create_app",
]

_log = logging.getLogger("serai.ocsp.http")

OCSP_REQUEST_TYPE: Final = "application/ocsp-request"
OCSP_RESPONSE_TYPE: Final = "application/ocsp-response"
#: Largest request body read; an OCSP request for one certificate is a few hundred bytes.
MAX_REQUEST_BYTES: Final = 64 * 1024

_RESPONDER_KEY: Final = web.AppKey("responder", OCSPResponder)
_MAX_BYTES_KEY: Final = web.AppKey("max_request_bytes", int)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    responder: OCSPResponder, *, max_request_bytes: int = MAX_REQUEST_BYTES
) -> web.Application:
    """An aiohttp application that serves ``responder`` on every path."""
    app = web.Application(middlewares=[_no_trace], client_max_size=max_request_bytes)
    app[_RESPONDER_KEY] = responder
    app[_MAX_BYTES_KEY] = max_request_bytes
    # [\s\S], not '.': a path may hold a percent-encoded newline, which '.' does not match.
    app.router.add_post("/{tail:[\\s\\S]*}", _post)
    app.router.add_get("/{tail:[\\s\\S]*}", _get)
    return app


class OCSPServer:
    """Runs :func:`create_app` on one TCP address until :meth:`stop`.

    ``port=0`` binds a free port; :attr:`port` tells which after :meth:`start`.
    """

    def __init__(
        self,
        *,
        responder: OCSPResponder,
        host: str = "127.0.0.1",
        port: int = 8890,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        shutdown_grace_s: float = 5.0,
    ) -> None:
        self._app = create_app(responder, max_request_bytes=max_request_bytes)
        self._host = host
        self._port = port
        self._grace_s = shutdown_grace_s
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and start serving."""
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=self._grace_s
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self._runner is None:
            raise RuntimeError("the OCSP server is not started")
        address = self._runner.addresses[0]
        port: int = address[1]
        return port

    @property
    def url(self) -> str:
        """The responder URL, e.g. ``http://127.0.0.1:8890/``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/"

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace period), close."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> OCSPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# -- handlers -------------------------------------------------------------------------------


async def _post(request: web.Request) -> web.StreamResponse:
    responder = request.app[_RESPONDER_KEY]
    if request.content_type != OCSP_REQUEST_TYPE:
        return web.Response(
            status=415,
            text=f"unsupported media type; send {OCSP_REQUEST_TYPE}\n",
            headers={"Accept-Post": OCSP_REQUEST_TYPE},
        )
    limit = request.app[_MAX_BYTES_KEY]
    if request.content_length is not None and request.content_length > limit:
        return _ocsp_response(responder.refusal(ocsp.OCSPResponseStatus.MALFORMED_REQUEST))
    body = await _read_bounded(request, limit)
    if body is None:
        return _ocsp_response(responder.refusal(ocsp.OCSPResponseStatus.MALFORMED_REQUEST))
    return _ocsp_response(responder.answer(body))


async def _get(request: web.Request) -> web.StreamResponse:
    responder = request.app[_RESPONDER_KEY]
    encoded = urllib.parse.unquote(request.rel_url.raw_path.lstrip("/"))
    limit = request.app[_MAX_BYTES_KEY]
    try:
        if len(encoded) > limit * 4 // 3 + 4:
            raise ValueError("too long")
        der = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        return _ocsp_response(responder.refusal(ocsp.OCSPResponseStatus.MALFORMED_REQUEST))
    return _ocsp_response(responder.answer(der), cacheable=True)


@web.middleware
async def _no_trace(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:  # noqa: BLE001  (never let a trace reach the wire)
        _log.exception("OCSP HTTP handler failed")
        return web.Response(status=500, text="internal error\n")


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or ``None`` once it exceeds ``limit`` (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


def _ocsp_response(answer: OCSPAnswer, *, cacheable: bool = False) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if (
        cacheable
        and answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        and not answer.has_nonce
        and answer.this_update is not None
        and answer.next_update is not None
    ):
        max_age = int((answer.next_update - dt.datetime.now(dt.UTC)).total_seconds())
        if max_age > 0:
            headers = {
                "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
                "Last-Modified": format_datetime(answer.this_update, usegmt=True),
                "Expires": format_datetime(answer.next_update, usegmt=True),
            }
    return web.Response(body=answer.der, content_type=OCSP_RESPONSE_TYPE, headers=headers)
