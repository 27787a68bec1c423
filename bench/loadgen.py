"""A light HTTP/1.1 load generator for the benchmarks: asyncio streams over keep-alive
connections, so the client's own cost stays small beside the server's on a 2-core machine
(httpx from threads cost the server about a core)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class Result:
    seconds: float
    latencies: list[float]  # seconds
    statuses: list[int]

    @property
    def rate(self) -> float:
        return len(self.statuses) / self.seconds

    def percentile(self, p: float) -> float:
        """In milliseconds."""
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    def count(self, low: int, high: int) -> int:
        return sum(low <= status < high for status in self.statuses)


def get(path: str, headers: dict[str, str], port: int) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def _load(port: int, requests: list[bytes], concurrency: int) -> Result:
    queue = iter(requests)
    latencies: list[float] = []
    statuses: list[int] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in queue:
                started = time.perf_counter()
                try:
                    status = await _exchange(reader, writer, request)
                except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
                    status = 599
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                latencies.append(time.perf_counter() - started)
                statuses.append(status)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return Result(time.perf_counter() - started, latencies, statuses)


def load(port: int, requests: list[bytes], concurrency: int) -> Result:
    """Send `requests` (raw HTTP/1.1) over `concurrency` keep-alive connections."""
    return asyncio.run(_load(port, requests, concurrency))
