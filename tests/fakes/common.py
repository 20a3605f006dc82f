"""What the stand-in servers share: serving on 127.0.0.1, `async with`, input checks."""

from __future__ import annotations

import base64
import binascii
import io
from types import TracebackType
from typing import Self, TypeGuard

from aiohttp import web
from PIL import Image


def is_int(value: object) -> TypeGuard[int]:
    """JSON integers only: `True` is not 1 here, as in pydantic's strict checks."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def decode_image(value: str) -> tuple[int, int] | None:
    """Size of a base64 (optionally ``data:`` URL) image, or None when it is not one."""
    data = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    data = "".join(data.split())
    data += "=" * (-len(data) % 4)
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return img.size
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError):
        return None


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
