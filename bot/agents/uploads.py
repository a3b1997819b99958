"""A file on its way to the agent service: spooled once (memory up to ``IN_MEMORY_BYTES``,
then a temporary file), so a retried upload can read it again and a 100 MB file never sits
in memory; sent as a streamed ``multipart/form-data`` body with a known length."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO

IN_MEMORY_BYTES = 4 * 1024 * 1024
READ_BYTES = 256 * 1024


class TooLargeError(ValueError):
    """The file grew past the limit while it was read (its declared size was wrong)."""


@dataclass
class Upload:
    name: str
    mime: str
    size: int = 0
    _spool: IO[bytes] = field(default_factory=lambda: tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES))

    @classmethod
    async def spool(cls, name: str, mime: str, chunks: AsyncIterator[bytes], *, limit: int) -> Upload:
        """Read ``chunks`` into the spool; past ``limit`` bytes it stops with TooLargeError."""
        upload = cls(name, mime)
        try:
            async for chunk in chunks:
                upload.size += len(chunk)
                if upload.size > limit:
                    raise TooLargeError(f"{name} is larger than {limit} bytes")
                await asyncio.to_thread(upload._spool.write, chunk)
        except BaseException:
            upload.close()
            raise
        return upload

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes from the start, a piece at a time (disk reads off the event loop)."""
        await asyncio.to_thread(self._spool.seek, 0)
        while piece := await asyncio.to_thread(self._spool.read, READ_BYTES):
            yield piece

    def close(self) -> None:
        self._spool.close()


@dataclass(frozen=True)
class Multipart:
    """``purpose`` and ``file`` as multipart/form-data: the headers, and a body that can be
    produced again for a retry."""

    upload: Upload
    purpose: str
    boundary: str = field(default_factory=lambda: "----slack-agent-bot-" + secrets.token_hex(12))

    def _head(self) -> bytes:
        name = self.upload.name.replace('"', "'").replace("\r", " ").replace("\n", " ")
        return (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{self.purpose}\r\n'
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {self.upload.mime or 'application/octet-stream'}\r\n\r\n"
        ).encode()

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def headers(self) -> dict[str, str]:
        length = len(self._head()) + self.upload.size + len(self._tail())
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(length),
        }

    async def body(self) -> AsyncIterator[bytes]:
        yield self._head()
        async for piece in self.upload.chunks():
            yield piece
        yield self._tail()
