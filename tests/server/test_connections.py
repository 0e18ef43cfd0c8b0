"""HTTP connection limits (server/connections.py) against the real server, with raw
sockets playing the hostile or careless client: silent and trickling connections are
closed with a 408 once the read timeout passes, oversized headers get a 431, a crowd
of idle connections past the cap cannot lock a real client out, and a client that
hangs up mid-body leaves the server answering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import config_variant, running_server

READ_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 64


@pytest.fixture(scope="module")
def server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("connections")
    limits = {"request_read_timeout_s": READ_TIMEOUT_S, "max_connections": MAX_CONNECTIONS}
    config = config_variant(test_config, folder, connections=limits)
    with running_server(config, name="connections") as url:
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=120) as c:
        yield c


async def connect(server: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(server)
    return await asyncio.open_connection(url.hostname, url.port)


async def status_of(reader: asyncio.StreamReader, within: float = 60.0) -> tuple[int, float]:
    """The status the server replied with, and when (monotonic), or 0 for a bare close."""
    line = await asyncio.wait_for(reader.readline(), within)
    at = time.monotonic()
    return (int(line.split()[1]) if line else 0), at


async def test_a_silent_connection_gets_a_408_after_the_read_timeout(
    server: str, client: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    reader, writer = await connect(server)
    assert (await client.get("/health_check")).status_code == 200  # others are answered
    status, at = await status_of(reader)
    assert status == 408
    assert at - started >= READ_TIMEOUT_S * 0.9
    await asyncio.wait_for(reader.read(), 30)  # and closed after the reply
    writer.close()


async def test_headers_trickled_a_byte_at_a_time_are_cut_off(
    server: str, client: httpx.AsyncClient
) -> None:
    reader, writer = await connect(server)
    request = b"GET /health_check HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    started = time.monotonic()
    sent = 0
    while not reader.at_eof() and sent < len(request):
        writer.write(request[sent : sent + 1])
        sent += 1
        try:
            await writer.drain()
        except ConnectionError:
            break
        if reader._buffer:  # type: ignore[attr-defined]  # the server replied
            break
        await asyncio.sleep(0.05)
    status, at = await status_of(reader)
    assert status == 408, "headers sent a byte every 50 ms must not hold the connection"
    assert at - started >= READ_TIMEOUT_S * 0.9
    assert sent < len(request)
    writer.close()


async def test_a_body_that_stops_arriving_gets_a_408(server: str) -> None:
    reader, writer = await connect(server)
    head = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n"
    )
    writer.write(head + b'{"prompt": "')
    await writer.drain()
    status, _ = await status_of(reader)
    assert status == 408
    writer.close()


async def test_a_client_that_hangs_up_mid_body_leaves_the_server_answering(
    server: str, client: httpx.AsyncClient
) -> None:
    for _ in range(5):
        _, writer = await connect(server)
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 500\r\n\r\n{"prompt": "Hello'
        )
        await writer.drain()
        writer.close()
    reply = await client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 4})
    assert reply.status_code == 200, reply.text


async def test_oversized_headers_get_a_431(server: str, client: httpx.AsyncClient) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /health_check HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    await writer.drain()
    status, _ = await status_of(reader)
    assert status == 431
    writer.close()
    # Headers under the limit are fine.
    assert (await client.get("/health_check", headers={"X-Big": "a" * 8000})).status_code == 200


@pytest.fixture(scope="module")
def capped_server(test_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A cap of MAX_CONNECTIONS and no read timeout to speak of, so that only the cap
    closes idle connections."""
    folder = tmp_path_factory.mktemp("capped")
    limits = {"request_read_timeout_s": 3600, "max_connections": MAX_CONNECTIONS}
    config = config_variant(test_config, folder, connections=limits)
    with running_server(config, name="connections-capped") as url:
        yield url


async def test_idle_connections_past_the_cap_cannot_lock_out_a_real_client(
    capped_server: str,
) -> None:
    """Four times the cap of silent connections: each new one closes the longest-open
    idle one, and a stream started amid them runs to its end."""
    server = capped_server
    idle = [await connect(server) for _ in range(MAX_CONNECTIONS * 4)]
    body = {"prompt": "Once upon a time", "max_tokens": 24, "stream": True, "temperature": 0}
    chunks = 0
    async with (
        httpx.AsyncClient(base_url=server, timeout=120) as fresh,
        fresh.stream("POST", "/v1/completions", json=body) as reply,
    ):
        assert reply.status_code == 200
        async for line in reply.aiter_lines():
            chunks += line.startswith("data: {")
            if chunks == 2:  # more idle sockets while the stream runs
                idle += [await connect(server) for _ in range(MAX_CONNECTIONS)]
    assert chunks >= 2
    # The oldest idle sockets were closed to make room (EOF, with no reply).
    closed = sum([await _closed(reader) for reader, _ in idle[:MAX_CONNECTIONS]])
    assert closed == MAX_CONNECTIONS
    for _, writer in idle:
        writer.close()


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 30) == b""
    except (ConnectionError, TimeoutError):
        return False
