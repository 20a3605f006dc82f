"""What every stand-in server shares: serving an aiohttp app on 127.0.0.1, `async with`."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from aiohttp import web


async def serve_on_loopback(
    app: web.Application, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Start `app` (port 0: any free port); returns its runner and `http://host:port`."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"


class LoopbackServer:
    """`async with Fake() as fake:` for stand-ins that define `start()` and `close()`."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
