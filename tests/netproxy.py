"""A TCP proxy the tests control, to cut a process off from its database without
touching the database server: an asyncio loop in a thread of the test.

Modes (:meth:`NetProxy.set_mode`):

- ``pass``: bytes flow both ways;
- ``blackhole``: a network partition. Nothing is forwarded and nothing is answered, and
  no error arrives either: connections (new ones too) just hang. Bytes already sent stay
  in the kernel's buffers, as TCP would retransmit them, and flow again on ``pass``;
- ``drop``: every connection is reset (``SO_LINGER`` 0, so the peers see a reset, not a
  clean close), and so is every new one as soon as it is accepted.

:meth:`recover` is ``set_mode("pass")``. Used as a context manager, the proxy and every
connection through it are closed on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any

MODES = ("pass", "blackhole", "drop")
CHUNK = 65536


class NetProxy:
    """Listens on ``127.0.0.1:<port>`` (the OS picks the port) and forwards to
    ``upstream_host:upstream_port`` according to the mode."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode = "pass"
        self.accepted = 0  # connections accepted so far (any mode)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netproxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._links: set[_Link] = set()

    # -- control, from the test's thread ---------------------------------------------------

    def start(self) -> NetProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def set_mode(self, mode: str) -> None:
        """Switch to ``mode``; returns once the switch is done (connections reset)."""
        assert mode in MODES, mode
        asyncio.run_coroutine_threadsafe(self._switch(mode), self._loop).result(10)

    def recover(self) -> None:
        self.set_mode("pass")

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> NetProxy:
        return self.start() if not self._thread.is_alive() else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- on the proxy's loop -------------------------------------------------------------

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _switch(self, mode: str) -> None:
        assert self._flowing is not None
        self.mode = mode
        if mode == "pass":
            self._flowing.set()
            return
        self._flowing.clear()
        if mode == "drop":
            for link in list(self._links):
                link.reset()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.reset()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.accepted += 1
        if self.mode == "drop":
            _reset(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._flowing.wait()  # a blackhole: accepted, never answered
            if link.closed:
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            link.upstream = up_writer
            if link.closed:
                _reset(up_writer)
                return
            await asyncio.gather(
                self._pump(reader, up_writer, link), self._pump(up_reader, writer, link)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.reset()
            self._links.discard(link)

    async def _pump(
        self, source: asyncio.StreamReader, target: asyncio.StreamWriter, link: _Link
    ) -> None:
        """Copy ``source`` to ``target`` while the mode lets bytes flow; bytes read just
        before a blackhole are held until it ends."""
        assert self._flowing is not None
        try:
            while not link.closed:
                await self._flowing.wait()
                data = await source.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                if link.closed:
                    break
                target.write(data)
                await target.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.reset()


class _Link:
    """The two sockets of one proxied connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.closed = False

    def reset(self) -> None:
        if self.closed:
            return
        self.closed = True
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (no FIN handshake), as a dropped connection looks."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
