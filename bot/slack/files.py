"""Files people share in Slack, read with the bot token (``url_private_download`` needs
``Authorization: Bearer`` and the ``files:read`` scope). Without them Slack answers 200 with
its HTML sign-in page, so an HTML answer for a file that is not HTML is a refusal, not the
file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from slack_sdk.web.async_client import AsyncWebClient

CHUNK = 256 * 1024


class FileUnavailable(Exception):
    """Slack did not give the file (no access, deleted, or the sign-in page)."""


async def download(http: httpx.AsyncClient, token: str, file: dict[str, Any]) -> AsyncIterator[bytes]:
    """The file's bytes as they arrive (never all in memory)."""
    url = file.get("url_private_download") or file.get("url_private")
    if not url:
        raise FileUnavailable("Slack gave no download address (an external or deleted file?)")
    try:
        async with http.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as response:
            kind = response.headers.get("content-type", "")
            if response.status_code != 200:
                raise FileUnavailable(f"Slack answered {response.status_code}")
            if kind.startswith("text/html") and "html" not in str(file.get("mimetype", "")):
                raise FileUnavailable("Slack sent its sign-in page: the bot needs the files:read scope")
            async for chunk in response.aiter_bytes(CHUNK):
                yield chunk
    except httpx.HTTPError as exc:
        raise FileUnavailable(f"the download failed: {exc or type(exc).__name__}") from None


async def upload_to_thread(
    client: AsyncWebClient,
    http: httpx.AsyncClient,
    *,
    channel: str,
    thread_ts: str,
    name: str,
    size: int,
    chunks: Callable[[], AsyncIterator[bytes]],
) -> str:
    """Slack's external upload (what ``files_upload_v2`` does, but streamed): an upload URL
    for ``size`` bytes, the bytes POSTed to it, then the file shared in the thread. Returns
    the Slack file id; SlackApiError or FileUnavailable when Slack refuses."""
    ticket = await client.files_getUploadURLExternal(filename=name, length=size)
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    try:
        response = await http.post(str(ticket["upload_url"]), content=chunks(), headers=headers)
    except httpx.HTTPError as exc:
        raise FileUnavailable(f"the upload failed: {exc or type(exc).__name__}") from None
    if response.status_code != 200:
        raise FileUnavailable(f"Slack refused the upload ({response.status_code})")
    file_id = str(ticket["file_id"])
    await client.files_completeUploadExternal(
        files=[{"id": file_id, "title": name}], channel_id=channel, thread_ts=thread_ts
    )
    return file_id
