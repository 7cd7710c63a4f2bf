"""The acknowledgement recorder of the ingress suite's kill -9 check (a child process).

A closed-loop client over keep-alive connections that appends the execution id of every 202
it receives to a file, as it receives it, until the deadline; requests that fail (the server
was killed) are retried on a new connection. The check then compares that file with the
store: every id there was acknowledged, so every one must have its event. Prints one JSON
object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Conn:
    """One keep-alive connection sending whole requests and reading whole answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def record_acks(
    host: str, port: int, raw: bytes, seconds: float, connections: int
) -> list[str]:
    """Send until the deadline; return the execution id of every 202 received."""
    acked: list[str] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        conn: Conn | None = None
        while time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = await Conn.open(host, port)
                status, body = await conn.send(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.05)
                continue
            if status == 202:
                acked.append(json.loads(body)["execution_id"])
        if conn is not None:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return acked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", required=True, help="file holding the body")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", required=True, help="file for the acknowledged ids")
    args = parser.parse_args()
    with open(args.body, "rb") as fh:
        body = fh.read()
    headers = dict(h.split(": ", 1) for h in args.header)
    raw = build_request("127.0.0.1", args.port, args.path, body, headers)
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    acked = runner(record_acks("127.0.0.1", args.port, raw, args.seconds, args.connections))
    with open(args.out, "w") as sink:
        sink.write("".join(f"{execution_id}\n" for execution_id in acked))
    print(json.dumps({"acked": len(acked)}))


if __name__ == "__main__":
    main()
