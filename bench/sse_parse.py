"""Our SSE decoder against the stream parsing of azure-ai-agents 1.1.0.

Both sides turn the same bytes, fed in the same chunk sizes, into typed events:
  ours: SSEDecoder -> json.loads -> WireEventMapper (backend-neutral events)
  SDK:  BaseAgentEventHandler framing -> _parse_event (JSON -> SDK models)
The stream is a recording of the agent emulator's realistic run (text deltas, fragmented
tool-call arguments, a citation, run/step/message objects), repeated to the target size.
Figures are MB/s and ratios measured in this one run; absolute numbers vary by machine.

    make bench                      # 5 MB, chunk sizes 1 B .. 64 KB
    python bench/sse_parse.py --size 1 --chunks 64,4096
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.ai.agents.models._patch import BaseAgentEventHandler, _parse_event

from bot.agents.classic.wire import WireEventMapper
from bot.agents.sse import SSEDecoder
from bot.emulators.recording import REALISTIC_SCRIPT, record_run

MB = 1024 * 1024


class _SdkParser(BaseAgentEventHandler[Any]):
    def _process_event(self, event_data_str: str) -> tuple[str, Any]:
        return _parse_event(event_data_str)


class _SdkFraming(BaseAgentEventHandler[Any]):
    def _process_event(self, event_data_str: str) -> str:
        return event_data_str


def sdk_full(chunks: list[bytes]) -> int:
    parser = _SdkParser()
    parser.initialize(iter(chunks), lambda *args: None)
    return sum(1 for _ in parser)


def sdk_framing(chunks: list[bytes]) -> int:
    parser = _SdkFraming()
    parser.initialize(iter(chunks), lambda *args: None)
    return sum(1 for _ in parser)


def ours_full(chunks: list[bytes]) -> int:
    decoder = SSEDecoder()
    mapper = WireEventMapper()
    count = 0
    loads = json.loads
    for chunk in chunks:
        for event in decoder.feed(chunk):
            data = event.data if event.event == "done" else loads(event.data)
            mapper.map(event.event, data)
            count += 1
    return count


def ours_framing(chunks: list[bytes]) -> int:
    decoder = SSEDecoder()
    return sum(len(decoder.feed(chunk)) for chunk in chunks)


def best_time(fn: Callable[[list[bytes]], int], chunks: list[bytes], repeat: int) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = fn(chunks)
        best = min(best, time.perf_counter() - started)
    return best, count


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def stream_of(size_bytes: int, unit: bytes) -> bytes:
    return unit * max(1, size_bytes // len(unit))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=float, default=5.0, help="stream size in MB (default 5)")
    parser.add_argument("--chunks", default="1,16,256,4096,65536", help="chunk sizes in bytes")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (1-byte chunks: 1)")
    parser.add_argument(
        "--report-only", action="store_true", help="exit 0 when a target is missed (smoke runs)"
    )
    args = parser.parse_args()

    unit = asyncio.run(record_run(REALISTIC_SCRIPT, "how fast can the bot edit?"))
    data = stream_of(int(args.size * MB), unit)
    mb = len(data) / MB
    sizes = [int(s) for s in args.chunks.split(",")]
    print(f"stream: {mb:.2f} MB of recorded agent events ({len(unit)} B unit x {len(data) // len(unit)})")
    print()
    print("full path: bytes -> typed events")
    print(
        f"{'chunk':>8} {'ours MB/s':>10} {'SDK MB/s':>10} {'ratio':>7}   "
        f"{'framing only: ours':>19} {'SDK':>8} {'ratio':>6}"
    )
    ratios = []
    for size in sizes:
        chunks = chunked(data, size)
        repeat = 1 if size < 16 else args.repeat
        ours_t, ours_n = best_time(ours_full, chunks, repeat)
        sdk_t, sdk_n = best_time(sdk_full, chunks, repeat)
        ours_ft, _ = best_time(ours_framing, chunks, repeat)
        sdk_ft, _ = best_time(sdk_framing, chunks, repeat)
        if ours_n != sdk_n:
            print(f"event counts differ: ours {ours_n}, SDK {sdk_n}", file=sys.stderr)
            return 1
        ratio = sdk_t / ours_t
        ratios.append(ratio)
        print(
            f"{size:>8} {mb / ours_t:>10.1f} {mb / sdk_t:>10.1f} {ratio:>6.1f}x   "
            f"{mb / ours_ft:>19.1f} {mb / sdk_ft:>8.1f} {sdk_ft / ours_ft:>5.1f}x"
        )
    met = [size for size, ratio in zip(sizes, ratios, strict=True) if ratio >= 3]
    print(
        f"\nfull path ratio, ours vs SDK: min {min(ratios):.1f}x, max {max(ratios):.1f}x; "
        f">= 3x at chunk sizes {met or 'none'}"
    )
    if 1 in sizes:
        print("  (at 1-byte chunks both sides pay one Python call per byte; that call, not the parsing,")
        print("   is most of both figures there)")

    print("\nlinear growth (ours, full path): time for 10x the input")
    growths = []
    for size in (256, 4096):
        small = stream_of(len(data) // 10, unit)
        t_small, _ = best_time(ours_full, chunked(small, size), max(args.repeat, 7))
        t_big, _ = best_time(ours_full, chunked(data, size), max(args.repeat, 7))
        growth = t_big / t_small * (len(small) / len(data)) * 10
        growths.append(growth)
        print(
            f"  chunk {size:>5} B: {len(small) / MB:.2f} MB {t_small:.3f} s -> "
            f"{mb:.2f} MB {t_big:.3f} s: "
            f"{growth:.2f}x the time for 10x the input (target <= 11x)"
        )

    print("\none large event (a 1 MB run object) in 1 KB chunks: 1x and 4x the size")
    for label, fn in (("ours", ours_full), ("SDK", sdk_full)):
        times = []
        for factor in (1, 4):
            blob = json.dumps(
                {
                    "id": "run_1",
                    "object": "thread.run",
                    "thread_id": "t",
                    "status": "queued",
                    "instructions": "x" * (factor * MB),
                }
            )
            event = f"event: thread.run.created\ndata: {blob}\n\n".encode()
            t, _ = best_time(fn, chunked(event, 1024), 1)
            times.append(t)
        print(
            f"  {label:>4}: {times[0]:.3f} s -> {times[1]:.3f} s "
            f"({times[1] / times[0]:.1f}x the time for 4x the input)"
        )
    if max(growths) > 11:
        print("the growth target (<= 11x for 10x the input) was missed")
        return 0 if args.report_only else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
