"""A small daemon double for the transport/flusher/runtime tests (no tests of its own).

It speaks the real protocol (`protocol.encode_message` / `FrameDecoder`) on a
real Unix socket, served by asyncio on a background thread, and records what
every client sent. Behaviour the tests need is switched by attributes:
reject the handshake, send an initial Patch after Welcome, answer requests,
stop reading (a slow daemon), drop every connection (a daemon that died).

The file name keeps it inside the files of the transport part; it holds no
tests, so pytest collects nothing from it.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from protocol.constants import PROTOCOL_VERSION
from protocol.framing import FrameDecoder, encode_message
from protocol import messages as m


@dataclass
class ClientRecord:
    client_id: int
    hello: m.Hello
    messages: list = field(default_factory=list)
    writer: Any = None
    closed: bool = False


class ProtocolServer:
    """A protocol-speaking server on `path`; use as a context manager."""

    def __init__(self, path: str, *, session_version: int = 0):
        self.path = str(path)
        self.session_version = session_version
        self.reject_reason: str | None = None
        self.initial_patch: m.Patch | None = None
        self.read_delay = 0.0          # seconds to sleep before each read: a slow daemon
        self.paused = threading.Event()  # set: stop reading once the client is welcomed
        self.step_reply: Callable[[m.StepRequest], Any] | None = None
        self.answer_requests = True
        self.clients: list[ClientRecord] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._next_client = 1

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "ProtocolServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)

    def kill(self) -> None:
        """Stop listening and cut every connection, like a daemon that died."""
        asyncio.run_coroutine_threadsafe(self._kill(), self._loop).result(5)

    def close(self) -> None:
        self.paused.clear()
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    async def _shutdown(self) -> None:
        # Finish every connection's task before the loop stops: a task left
        # pending is reported ("Task was destroyed but it is pending!") at exit.
        await self._kill()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def _kill(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for client in self.clients:
            if client.writer is not None and not client.closed:
                client.writer.transport.abort()
                client.closed = True
        if os.path.exists(self.path):
            os.unlink(self.path)

    # -- what clients sent -------------------------------------------------

    def messages(self, kind: type | None = None, client: int | None = None) -> list:
        with self._changed:
            return [
                msg
                for record in self.clients
                if client is None or record.client_id == client
                for msg in record.messages
                if kind is None or isinstance(msg, kind)
            ]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until `predicate()` is truthy; return it.

        Re-checked on every received message and every 20 ms (for conditions
        on the client side, which do not notify the server)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"condition not met within {timeout} s")
                self._changed.wait(min(remaining, 0.02))

    def send_to_all(self, msg: Any) -> None:
        data = encode_message(msg)

        def write() -> None:
            for client in self.clients:
                if client.writer is not None and not client.closed:
                    client.writer.write(data)

        self._loop.call_soon_threadsafe(write)

    # -- serving -----------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        record: ClientRecord | None = None
        try:
            while True:
                while self.paused.is_set() and record is not None:  # handshake first, then stall
                    await asyncio.sleep(0.01)
                if self.read_delay:
                    await asyncio.sleep(self.read_delay)
                chunk = await reader.read(4096 if self.read_delay else 65536)
                if not chunk:
                    return
                for msg in decoder.feed(chunk):
                    if record is None:
                        record = self._handshake(msg, writer)
                        if record is None:
                            await writer.drain()
                            writer.close()
                            return
                        continue
                    self._record(record, msg)
                    self._answer(msg, writer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if record is not None:
                record.closed = True
            with self._changed:
                self._changed.notify_all()

    def _handshake(self, msg: Any, writer: asyncio.StreamWriter) -> ClientRecord | None:
        assert isinstance(msg, m.Hello), f"first message was {msg!r}"
        if self.reject_reason is not None:
            writer.write(encode_message(m.Reject(reason=self.reject_reason, protocol=PROTOCOL_VERSION)))
            return None
        record = ClientRecord(client_id=self._next_client, hello=msg, writer=writer)
        self._next_client += 1
        with self._changed:  # before the Welcome: the client may look as soon as it has it
            self.clients.append(record)
            self._changed.notify_all()
        writer.write(encode_message(m.Welcome(
            protocol=PROTOCOL_VERSION, daemon_pid=os.getpid(), client_id=record.client_id,
            session=msg.session, version=self.session_version,
        )))
        if self.initial_patch is not None:
            writer.write(encode_message(self.initial_patch))
        return record

    def _record(self, record: ClientRecord, msg: Any) -> None:
        with self._changed:
            record.messages.append(msg)
            self._changed.notify_all()

    def _answer(self, msg: Any, writer: asyncio.StreamWriter) -> None:
        if not self.answer_requests:
            return
        if isinstance(msg, m.StatusQuery):
            reply = m.StatusReply(request_id=msg.request_id, status={"clients": len(self.clients)})
        elif isinstance(msg, m.StepRequest):
            reply = self.step_reply(msg) if self.step_reply else m.StepDone(request_id=msg.request_id, version=None)
        elif isinstance(msg, m.Request):
            if msg.command == "fail":
                reply = m.Error(code="bad_request", message="asked to fail", request_id=msg.request_id)
            else:
                reply = m.Reply(request_id=msg.request_id, ok=True, data={"echo": msg.args})
        else:
            return
        if reply is not None:
            writer.write(encode_message(reply))
