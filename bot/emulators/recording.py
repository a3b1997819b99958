"""Record the exact bytes the agent emulator streams for a scripted run.

Tests and benchmarks feed these recordings to decoders, so they parse the same
realistic framing and JSON shapes that the real service sends (and that the official
SDK accepts when it talks to the emulator).
"""

from __future__ import annotations

from typing import Any

import httpx

from .agent_script import Script
from .agents import AgentServiceEmulator


async def record_run(
    script: Script | dict[str, Any],
    message: str,
    *,
    crlf: bool = False,
    tool_output: str = '{"ok": true}',
) -> bytes:
    """Raw bytes of every streamed response of one run (tool rounds answered with
    ``tool_output``), concatenated in order."""
    if not isinstance(script, Script):
        script = Script.parse(script)
    async with AgentServiceEmulator(script, crlf=crlf) as emulator:
        headers = {"Authorization": "Bearer recording"}
        params = {"api-version": "v1"}
        async with httpx.AsyncClient(
            base_url=emulator.endpoint, headers=headers, params=params, timeout=30
        ) as http:
            thread = (await http.post("/threads", json={})).json()
            await http.post(f"/threads/{thread['id']}/messages", json={"role": "user", "content": message})
            body = (
                await http.post(
                    f"/threads/{thread['id']}/runs",
                    json={"assistant_id": "asst_demo", "stream": True},
                )
            ).content
            recorded = [body]
            while True:
                run = next(r for r in emulator.runs.values() if r.doc["thread_id"] == thread["id"])
                if run.status != "requires_action":
                    break
                calls = run.doc["required_action"]["submit_tool_outputs"]["tool_calls"]
                outputs = [{"tool_call_id": c["id"], "output": tool_output} for c in calls]
                response = await http.post(
                    f"/threads/{thread['id']}/runs/{run.id}/submit_tool_outputs",
                    json={"stream": True, "tool_outputs": outputs},
                )
                recorded.append(response.content)
            return b"".join(recorded)


REALISTIC_SCRIPT: dict[str, Any] = {
    "delay": 0,
    "turns": [
        {
            "repeat": True,
            "actions": [
                {"text": "Let me look that up for you. ", "deltas": 6},
                {
                    "tool_calls": [
                        {
                            "name": "search_docs",
                            "arguments": {
                                "query": "rate limits for chat.update",
                                "top": 5,
                                "filters": {"lang": "en"},
                            },
                        }
                    ],
                    "fragments": 8,
                },
                {
                    "text": "Slack's `chat.update` is a **Tier 3** method: about 50 calls "
                    "per minute "
                    "per workspace. Über-long replies get split; 東京 and emoji 😀 survive "
                    "chunking. " * 3,
                    "deltas": 40,
                },
                {
                    "citation": {
                        "url": "https://api.slack.com/methods/chat.update",
                        "title": "chat.update",
                    }
                },
                {
                    "text": "\n\n```python\nclient.chat_update(channel=c, ts=ts, text=t)\n```\n",
                    "deltas": 8,
                },
            ],
        }
    ],
}
