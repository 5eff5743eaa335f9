"""A small HTTP/1.1 keep-alive load generator, run as its own process.

``python -m bench.loadgen '<json spec>'`` opens ``connections`` keep-alive connections to
one loopback server and sends requests until ``requests`` have been sent or
``duration`` seconds have passed, whichever comes first. Every loop is bounded in count
and in time. The summary is printed as one JSON object on stdout.

The spec's ``path`` may contain ``{i}``: it is replaced by the request's index (0, 1, …)
so that each request can carry a distinct sequence number or idempotency key.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")
READ_TIMEOUT = 30.0  # seconds one response may take before the connection gives up


@dataclass
class Spec:
    """What to send: where, how many connections, and the count and time bounds."""

    port: int
    path: str
    host: str = "127.0.0.1"
    method: str = "POST"
    connections: int = 1
    requests: int = 1000
    duration: float = 10.0
    pause: float = 0.0  # seconds each connection waits between its requests
    keep_indices: bool = False  # report the indices that were answered with 2xx

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK:
            raise ValueError(f"the load generator only targets loopback, not {self.host!r}")
        if self.requests < 1 or self.connections < 1 or self.duration <= 0:
            raise ValueError("requests, connections and duration must be positive")


@dataclass
class _State:
    """Shared counters of one run."""

    spec: Spec
    deadline: float
    issued: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    ok_indices: list[int] = field(default_factory=list)
    first_sent: float | None = None
    last_done: float | None = None

    def take(self) -> int | None:
        """The next request index, or None once the count or the time is used up."""
        if self.issued >= self.spec.requests or time.monotonic() >= self.deadline:
            return None
        self.issued += 1
        return self.issued - 1


def _request_bytes(spec: Spec, index: int) -> bytes:
    path = spec.path.replace("{i}", str(index))
    return (
        f"{spec.method} {path} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (status line, headers, Content-Length body); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
            break
    if length:
        await reader.readexactly(length)
    return status


async def _connection(state: _State) -> None:
    """One keep-alive connection sending requests until the run's bounds are reached."""
    spec = state.spec
    try:
        reader, writer = await asyncio.open_connection(spec.host, spec.port)
    except OSError:
        state.errors += 1
        return
    try:
        while (index := state.take()) is not None:
            started = time.monotonic()
            if state.first_sent is None:
                state.first_sent = time.time()
            writer.write(_request_bytes(spec, index))
            async with asyncio.timeout(READ_TIMEOUT):
                status = await _read_response(reader)
            state.last_done = time.time()
            state.latencies.append(time.monotonic() - started)
            state.statuses[status] = state.statuses.get(status, 0) + 1
            if 200 <= status < 300 and spec.keep_indices:
                state.ok_indices.append(index)
            if spec.pause:
                await asyncio.sleep(spec.pause)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
        state.errors += 1
    finally:
        writer.close()


async def run(spec: Spec) -> dict[str, Any]:
    """Run the load described by ``spec``; a JSON-ready summary."""
    state = _State(spec=spec, deadline=time.monotonic() + spec.duration)
    began = time.monotonic()
    await asyncio.gather(*(_connection(state) for _ in range(spec.connections)))
    elapsed = time.monotonic() - began
    latencies = sorted(state.latencies)
    answered = sum(state.statuses.values())
    ok = sum(count for status, count in state.statuses.items() if 200 <= status < 300)
    summary: dict[str, Any] = {
        "requests": answered,
        "ok": ok,
        "errors": state.errors,
        "statuses": {str(k): v for k, v in sorted(state.statuses.items())},
        "elapsed_s": elapsed,
        "rps": ok / elapsed if elapsed > 0 else 0.0,
        "first_sent_at": state.first_sent,
        "last_done_at": state.last_done,
        "latency_ms": {
            "p50": _pick(latencies, 0.50) * 1000,
            "p99": _pick(latencies, 0.99) * 1000,
        },
    }
    if spec.keep_indices:
        summary["ok_indices"] = sorted(state.ok_indices)
    return summary


def _pick(values: list[float], quantile: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(quantile * len(values)))]


def main(argv: list[str]) -> int:
    """Entry point: the spec as a JSON object in ``argv[0]``."""
    spec = Spec(**json.loads(argv[0]))
    print(json.dumps(asyncio.run(run(spec))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
