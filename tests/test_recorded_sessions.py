"""Real service sessions as the yardstick (tests/fixtures/recordings, from the Azure SDK's own
live-test recordings).

Each recorded response is replayed through our client over httpx's transport seam (same
events, same final text), and the same request is sent to our emulator, whose answer is
compared with the recording field by field: status, content type, event order and the
shape of every object. Every difference left is listed in ``KNOWN_DIFFERENCES`` (and in
docs/service-contract.md) with the reason it is harmless; a new one fails the test, and so
does a listed one that has gone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from bot.agents import ToolOutput
from bot.agents.classic import AgentsClient
from bot.agents.events import Completed, TextDelta, ToolCallsRequested
from bot.agents.foundry import FoundryBackend
from bot.agents.foundry.backend import agent_info, snapshot_of
from bot.emulators.agent_script import Script
from bot.emulators.agents import AgentServiceEmulator

FIXTURES = Path(__file__).parent / "fixtures" / "recordings"
SESSIONS = sorted(p.stem for p in FIXTURES.glob("*.json") if not p.stem.startswith("quoted_"))
ENDPOINT = "https://example.services.ai.azure.com/api/projects/demo"

OLDER = "this older session (Dec 2025) predates `completed_at`; the later agent session has it"
REASONING = "a model response sent `reasoning: {}`, the agent sessions `{effort: null, summary: null}`"

# Differences between a recording and our emulator's answer to the same request, each with
# why it does not matter (kept in step with docs/service-contract.md, "Recorded sessions").
KNOWN_DIFFERENCES: dict[str, dict[str, str]] = {
    "responses_stream_with_tools": {
        "extra response.agent": "the recording is a model response; every answer of an agent carries `agent`",
        "extra message.created_by": "items an agent writes carry `created_by` (as in the agent session)",
        "extra response.content_filters[]": (
            "the model session had no content filter results; the agent session had them"
        ),
        "extra response.created response.completed_at": OLDER,
        "extra response.in_progress response.completed_at": OLDER,
        "extra response.completed response.completed_at": OLDER,
    },
    "responses_non_streaming": {
        "extra response.agent": "the recording is a model response; every answer of an agent carries `agent`",
        "extra message.created_by": "items an agent writes carry `created_by` (as in the agent session)",
        "extra response.content_filters[]": (
            "the model session had no content filter results; the agent session had them"
        ),
        "extra response.fields": (
            "the GA model response omitted null fields (`completed_at`, `max_output_tokens`...) that "
            "the agent responses send as null; both parse the same"
        ),
        "extra json reasoning.effort": REASONING,
        "extra json reasoning.summary": REASONING,
    },
}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def sse_body(pairs: list[list[Any]]) -> bytes:
    out = []
    for event, data in pairs:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        out.append(f"event: {event}\ndata: {text}\n\n")
    return "".join(out).encode()


def replay(entries: list[dict[str, Any]]) -> httpx.AsyncClient:
    """An httpx client whose transport answers each request with the next recorded response."""
    queue = list(entries)

    def answer(request: httpx.Request) -> httpx.Response:
        entry = queue.pop(0)
        assert request.method == entry["method"]
        assert request.url.path.rsplit("/", 1)[-1] == entry["path"].rsplit("/", 1)[-1]
        body = sse_body(entry["sse"]) if "sse" in entry else json.dumps(entry["json"]).encode()
        return httpx.Response(entry["status"], content=body, headers={"content-type": entry["content_type"]})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def test_at_least_eight_real_sessions_across_both_apis() -> None:
    apis = [load(name)["api"] for name in SESSIONS]
    assert len(SESSIONS) >= 8 and {"classic", "responses"} <= set(apis)
    for name in SESSIONS:
        assert load(name)["source"].startswith("Azure/azure-sdk-assets python/sdk/ai/")


# -- replayed through our client ---------------------------------------------------------------


async def _replay_classic(session: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {"text": "", "tool_calls": [], "usage_total": None}
    async with AgentsClient(ENDPOINT, "t", http=replay(session["entries"])) as client:
        for entry in session["entries"]:
            parts = entry["path"].strip("/").split("/")
            if entry["path"].endswith("/runs") and "sse" in entry:
                stream = await client.stream_run(parts[1], entry["request"]["assistant_id"])
            elif entry["path"].endswith("/submit_tool_outputs"):
                stream = await client.submit_tool_outputs_stream(
                    parts[1], parts[3], entry["request"]["tool_outputs"]
                )
            elif entry["method"] == "GET" and "/runs/" in entry["path"]:
                run = await client.get_run(parts[1], parts[3])
                seen["status"] = run.status
                seen["expires_after_created_s"] = (run.expires_at or 0) - (run.created_at or 0)
                continue
            elif entry["method"] == "GET" and entry["path"].endswith("/messages"):
                page = await client.list_messages_page(parts[1])
                seen["texts_newest_first"] = [m.text for m in page.data]
                continue
            else:
                await client.add_message(parts[1], entry["request"]["content"])
                continue
            async with stream:
                _collect([e async for e in stream.events()], seen)
    return seen


async def _replay_responses(session: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {"text": "", "tool_calls": [], "usage_total": None, "texts": []}
    http = replay(session["entries"])
    backend = FoundryBackend(ENDPOINT, "t", "demo-agent", background=False, http=http)
    conversation = "conv_unknown"
    async with backend:
        for entry in session["entries"]:
            if entry["path"].endswith("/versions"):
                info = agent_info(
                    await backend.versions.create_version("x", entry["request"]["definition"]), "x"
                )
                seen["version"] = info.version
            elif entry["path"].endswith("/conversations"):
                conversation = await backend.create_conversation()
                seen["conversation"] = conversation
            elif "sse" in entry:
                outputs = [
                    i for i in entry["request"]["input"] if isinstance(entry["request"]["input"], list)
                ]
                if outputs:
                    outs = [ToolOutput(o["call_id"], o["output"]) for o in outputs]
                    stream = await backend.submit_tool_outputs(conversation, "resp", outs)
                else:
                    await backend.add_message(conversation, entry["request"]["input"])
                    stream = await backend.start_run(conversation)
                async with stream:
                    _collect([e async for e in stream.events()], seen)
            else:  # a non-streamed response, through the client our backend wraps
                client = AsyncOpenAI(base_url=f"{ENDPOINT}/openai/v1", api_key="t", http_client=http)
                response = await client.responses.create(**entry["request"])
                seen["texts"].append(snapshot_of(response.model_dump(mode="json"), "").text)
    return seen


def _collect(events: list[Any], seen: dict[str, Any]) -> None:
    seen["text"] += "".join(e.text for e in events if isinstance(e, TextDelta))
    for event in events:
        if isinstance(event, ToolCallsRequested):
            seen["tool_calls"] += [[c.name, c.arguments] for c in event.tool_calls]
        if isinstance(event, Completed) and event.usage:
            seen["usage_total"] = event.usage.total_tokens


@pytest.mark.parametrize("name", SESSIONS)
async def test_each_recorded_response_replays_through_our_client(name: str) -> None:
    session = load(name)
    seen = await (_replay_classic if session["api"] == "classic" else _replay_responses)(session)
    for key, expected in session["expect"].items():
        assert seen[key] == expected, key
    if name == "responses_prompt_agent_streaming":
        assert seen["version"] == "1"


# -- compared with our emulator ------------------------------------------------------------------


def shape(value: Any, prefix: str = "") -> set[str]:
    """Every field path in a JSON value: ``response.output[].content[].text``."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            paths |= shape(inner, path)
    elif isinstance(value, list):
        for inner in value:
            paths |= shape(inner, f"{prefix}[]")
    return paths


def collapse(names: list[str]) -> list[str]:
    """Event names with runs of the same event folded (the number of deltas is the model's)."""
    out: list[str] = []
    for name in names:
        if not out or out[-1] != name:
            out.append(name)
    return out


def parse_sse(raw: bytes) -> list[tuple[str, Any]]:
    events = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            data = fields.get("data", "")
            events.append((fields["event"], data if data == "[DONE]" else json.loads(data)))
    return events


def differences(name: str, recorded: list[tuple[str, Any]], ours: list[tuple[str, Any]]) -> set[str]:
    """What differs, as short labels that ``KNOWN_DIFFERENCES`` can name."""
    found: set[str] = set()
    assert collapse([e for e, _ in ours]) == collapse([e for e, _ in recorded]), name
    mine: dict[str, set[str]] = {}
    for event, data in ours:
        mine.setdefault(event, set()).update(shape(data))
    theirs: dict[str, set[str]] = {}
    for event, data in recorded:
        theirs.setdefault(event, set()).update(shape(data))
    for event, paths in theirs.items():
        missing, extra = paths - mine.get(event, set()), mine.get(event, set()) - paths
        found |= {_label("missing", event, p) for p in missing} | {_label("extra", event, p) for p in extra}
    return found


def _label(kind: str, event: str, path: str) -> str:
    """Fold a path difference into the label a reviewer reads (see KNOWN_DIFFERENCES)."""
    if path.split(".")[0] == "agent" or ".agent" in path:
        return f"{kind} response.agent"
    if "created_by" in path:
        return f"{kind} message.created_by"
    if "content_filters[]" in path:
        return f"{kind} response.content_filters[]"
    if event == "thread.run.step.delta":
        return f"{kind} run.step.delta {path.removeprefix('delta.step_details.')}"
    if event == "json" and path.count(".") == 0:
        return f"{kind} response.fields"
    return f"{kind} {event} {path}"


async def _post(http: httpx.AsyncClient, url: str, body: Any) -> tuple[int, str, bytes]:
    response = await http.post(url, json=body, headers={"Authorization": "Bearer t"})
    return response.status_code, response.headers["content-type"], response.content


def _recorded(entry: dict[str, Any]) -> list[tuple[str, Any]]:
    if "sse" in entry:
        return [(e, d) for e, d in entry["sse"]]
    return [("json", entry["json"])]


def _ours(content_type: str, raw: bytes) -> list[tuple[str, Any]]:
    return parse_sse(raw) if content_type.startswith("text/event-stream") else [("json", json.loads(raw))]


def _recorded_tools(session: dict[str, Any]) -> list[dict[str, Any]]:
    """The tools the recorded agent (or request) had, in the recording's own shape."""
    for entry in session["entries"]:
        if entry.get("request") and entry["request"].get("tools"):
            return [dict(t) for t in entry["request"]["tools"]]
        for _, data in entry.get("sse") or []:
            if isinstance(data, dict) and data.get("object") == "thread.run":
                return [dict(t) for t in data.get("tools") or []]
    return []


def _script_for(session: dict[str, Any]) -> Script:
    expect = session["expect"]
    actions: list[dict[str, Any]] = []
    for tool, arguments in expect.get("tool_calls") or []:
        actions.append({"tool_calls": [{"name": tool, "arguments": arguments}]})
    text = expect.get("text") or (expect.get("texts") or ["ok"])[0]
    if "status" in expect:  # a run polled while in progress
        actions.append({"sleep": 1.0})
    actions.append({"text": text, "deltas": 8})
    return Script.parse({"delay": 0, "turns": [{"repeat": True, "actions": actions}]})


async def _classic_against_emulator(session: dict[str, Any], emulator: AgentServiceEmulator) -> set[str]:
    found: set[str] = set()
    base = emulator.endpoint
    async with httpx.AsyncClient(params={"api-version": "v1"}) as http:
        thread = (await http.post(f"{base}/threads", json={}, headers={"Authorization": "Bearer t"})).json()
        await http.post(
            f"{base}/threads/{thread['id']}/messages",
            json={"role": "user", "content": "hello"},
            headers={"Authorization": "Bearer t"},
        )
        run_id = ""
        for entry in session["entries"]:
            if entry["path"].endswith("/runs"):
                status, kind, raw = await _post(
                    http,
                    f"{base}/threads/{thread['id']}/runs",
                    {**entry["request"], "assistant_id": "asst_demo"},
                )
                run_id = parse_sse(raw)[0][1]["id"]
            elif entry["path"].endswith("/submit_tool_outputs"):
                run = (
                    await http.get(
                        f"{base}/threads/{thread['id']}/runs/{run_id}", headers={"Authorization": "Bearer t"}
                    )
                ).json()
                calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
                outputs = [
                    {"tool_call_id": c["id"], "output": o["output"]}
                    for c, o in zip(calls, entry["request"]["tool_outputs"], strict=True)
                ]
                status, kind, raw = await _post(
                    http,
                    f"{base}/threads/{thread['id']}/runs/{run_id}/submit_tool_outputs",
                    {"stream": True, "tool_outputs": outputs},
                )
            elif entry["method"] == "GET" and "/runs/" in entry["path"]:
                _, _, raw = await _post(
                    http, f"{base}/threads/{thread['id']}/runs", {"assistant_id": "asst_demo"}
                )
                run_id = json.loads(raw)["id"]
                response = await http.get(
                    f"{base}/threads/{thread['id']}/runs/{run_id}", headers={"Authorization": "Bearer t"}
                )
                status, kind, raw = response.status_code, response.headers["content-type"], response.content
                await emulator.wait_run(run_id)
            elif entry["method"] == "GET":
                response = await http.get(
                    f"{base}/threads/{thread['id']}/messages", headers={"Authorization": "Bearer t"}
                )
                status, kind, raw = response.status_code, response.headers["content-type"], response.content
            else:
                status, kind, raw = await _post(
                    http, f"{base}/threads/{thread['id']}/messages", entry["request"]
                )
            assert status == entry["status"] and kind.split(";")[0] == entry["content_type"].split(";")[0]
            found |= differences(session["source"], _recorded(entry), _ours(kind, raw))
    return found


async def _responses_against_emulator(session: dict[str, Any], emulator: AgentServiceEmulator) -> set[str]:
    found: set[str] = set()
    base = f"{emulator.endpoint}/openai/v1"
    agent = {"agent_reference": {"type": "agent_reference", "name": "demo-agent"}}
    conversation = None
    pending_call = None
    async with httpx.AsyncClient() as http:
        for entry in session["entries"]:
            if entry["path"].endswith("/versions"):
                status, kind, raw = await _post(
                    http, f"{emulator.endpoint}/agents/{'x'}/versions?api-version=v1", entry["request"]
                )
            elif entry["path"].endswith("/conversations"):
                status, kind, raw = await _post(http, f"{base}/conversations", entry["request"])
                conversation = json.loads(raw)["id"]
            else:
                # the same request as an agent would send it: no model, no tools (refused)
                body = {k: v for k, v in entry["request"].items() if k not in ("model", "tools", "agent")}
                body.update(agent)
                if conversation:
                    body["conversation"] = conversation
                if isinstance(body.get("input"), list) and pending_call:
                    body["input"] = [{**i, "call_id": pending_call} for i in body["input"]]
                if body.get("previous_response_id"):
                    body.pop("previous_response_id")
                status, kind, raw = await _post(http, f"{base}/responses", body)
                if not body.get("stream"):
                    raw = await _finished(http, base, json.loads(raw)["id"])
                for _, data in _ours(kind, raw):
                    for item in (data.get("response") or {}).get("output") or []:
                        if item.get("type") == "function_call":
                            pending_call = item["call_id"]
            assert status == entry["status"] and kind.split(";")[0] == entry["content_type"].split(";")[0]
            found |= differences(session["source"], _recorded(entry), _ours(kind, raw))
    return found


async def _finished(http: httpx.AsyncClient, base: str, response_id: str) -> bytes:
    for _ in range(200):
        response = await http.get(f"{base}/responses/{response_id}", headers={"Authorization": "Bearer t"})
        if response.json()["status"] == "completed":
            return response.content
        import asyncio

        await asyncio.sleep(0.01)
    raise AssertionError("the emulator's response did not complete")


@pytest.mark.parametrize("name", SESSIONS)
async def test_our_emulator_answers_each_recorded_request_like_the_service(name: str) -> None:
    session = load(name)
    tools = _recorded_tools(session)
    compare: Callable[..., Any] = (
        _classic_against_emulator if session["api"] == "classic" else _responses_against_emulator
    )
    classic_tools = [
        {"type": "function", "function": {k: v for k, v in t["function"].items() if k != "strict"}}
        for t in tools
        if "function" in t
    ]
    async with AgentServiceEmulator(_script_for(session), agent_tools=classic_tools) as emulator:
        # the agent the request names has the recorded tools (new agents: in its version)
        emulator.responses_api.latest("demo-agent")["definition"]["tools"] = [
            t for t in tools if "function" not in t
        ]
        found = await compare(session, emulator)
    assert found == set(KNOWN_DIFFERENCES.get(name, {})), sorted(found)


async def test_the_quoted_refusal_matches_our_emulator_field_by_field() -> None:
    quoted = load("quoted_error_tools_with_agent")["entries"][0]
    async with AgentServiceEmulator() as emulator, httpx.AsyncClient() as http:
        status, kind, raw = await _post(http, f"{emulator.endpoint}/openai/v1/responses", quoted["request"])
    ours = json.loads(raw)
    assert status == quoted["status"] == 400 and kind.startswith("application/json")
    assert shape(ours) == shape(quoted["json"])
    for key in ("code", "message", "param", "type"):
        assert ours["error"][key] == quoted["json"]["error"][key]
