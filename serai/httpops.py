"""The operations HTTP port of a Serai process: ``/metrics``, ``/healthz``, ``/readyz``.

:class:`OpsServer` runs an aiohttp app on the process's event loop (DESIGN §7):

- ``GET /metrics``: the Prometheus text format of one :class:`CollectorRegistry` (the
  process's own, never the library's global default). The text is generated in a
  worker thread, so a scrape never holds the loop while it formats a large registry;
  the collectors read plain attributes and counters, which need no loop.
- ``GET /healthz``: ``200 ok`` while the loop answers at all (liveness).
- ``GET /readyz``: ``200 ready`` when ``readiness()`` gives no reason, else ``503`` with
  ``not ready`` and one reason per line. ``readiness`` is called on the loop: it must be
  cheap (read state, never wait).

The port binds to loopback by default (the callers' configuration defaults); anything
on it is readable by whoever reaches it, so it carries no secrets: metric labels and
reasons name subsystems, codes and times, never message bodies, keys or user ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from serai.cliutil import format_address, parse_listen
from serai.errors import ConfigError

__all__ = ["OpsServer", "metrics_listen_for"]

_TEXT: Final = "text/plain"


class OpsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one HTTP port (module docstring)."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        readiness: Callable[[], Sequence[str]],
        listen: tuple[str, int],
    ) -> None:
        self._registry = registry
        self._readiness = readiness
        self._listen = listen
        self._runner: web.AppRunner | None = None
        #: The bound port (the chosen one when ``listen`` asks for port 0).
        self.port = 0

    def app(self) -> web.Application:
        """The aiohttp application (tests drive it without a socket)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        """Bind and serve; a port that cannot be bound is an ``invalid_config`` error."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        host, port = self._listen
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {host}:{port} for metrics: {exc}") from exc
        self._runner = runner
        self.port = _bound_port(site, port)

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _readyz(self, _: web.Request) -> web.Response:
        reasons = list(self._readiness())
        if not reasons:
            return web.Response(text="ready\n", content_type=_TEXT)
        lines = "".join(f"- {_one_line(r)}\n" for r in reasons)
        return web.Response(status=503, text=f"not ready\n{lines}", content_type=_TEXT)


def metrics_listen_for(chosen: str | None, *, default: str, others_default: bool) -> str:
    """The ``metrics_listen`` an ``init`` command writes: ``chosen`` when given; else
    ``default`` when every other port of the process is its default; else any free port
    on loopback (``127.0.0.1:0``), so that several processes set up with ports of their
    own on one machine (the demo, tests) never collide on the metrics port. The bound
    address is printed in the process's ``*_listening`` line."""
    if chosen is not None:
        host, port = parse_listen(chosen)
        return format_address(host, port)
    return default if others_default else "127.0.0.1:0"


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n", content_type=_TEXT)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _bound_port(site: web.TCPSite, requested: int) -> int:
    if requested:
        return requested
    server = site._server
    for sock in getattr(server, "sockets", None) or ():
        return int(sock.getsockname()[1])
    return requested
