"""A stored file sent as a service sends it: with its length, in pieces (no copy of it)."""

from __future__ import annotations

from aiohttp import web

CHUNK = 64 * 1024


async def send_bytes(request: web.Request, content: bytes, content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(len(content))})
    await response.prepare(request)
    view = memoryview(content)
    for start in range(0, len(view), CHUNK):
        await response.write(view[start : start + CHUNK])
    await response.write_eof()
    return response
