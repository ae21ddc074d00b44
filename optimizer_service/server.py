"""The daemon's asyncio server: one task per connection, many processes at once.

Each connection starts with a handshake (Hello -> Welcome, or Reject), then
carries messages both ways. A process with a session name joins that
session; a Hello with an empty session opens a control connection
(`trace-daemon` commands, autostart probes) that can only ask for status and
run admin requests.

Failure containment: a peer of another uid is refused (SO_PEERCRED); a frame
that is oversized or not msgpack gets an Error reply and its connection is
closed; a well-formed message with a bad field gets an Error reply and the
connection goes on (the frame was consumed, the stream is in sync). Nothing
a client sends can stop the daemon serving the others.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
import time
from typing import Any, Final

from protocol import (PROTOCOL_VERSION, FrameDecoder, FrameTooLarge, InvalidMessage, MalformedFrame,
                      ProtocolError, VersionMismatch, check_hello, encode_message)
from protocol import messages as m
from optimizer_service.graph_export import FORMATS, UnknownFormat, export_graph
from optimizer_service.sessions import Member, Session, SessionError, SessionManager
from optimizer_service.store import StoreError

log = logging.getLogger(__name__)

READ_CHUNK: Final = 256 * 1024
HANDSHAKE_TIMEOUT_S: Final = 10.0
# A peer that stops reading is cut off once this much is queued for it.
MAX_WRITE_BUFFER: Final = 64 * 1024 * 1024


class Connection:
    """One client connection; `send` never blocks and never raises."""

    def __init__(self, server: "DaemonServer", reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.closing = False
        self.session: Session | None = None
        self.member: Member | None = None
        self.tasks: set[asyncio.Task] = set()

    def send(self, message: Any) -> None:
        if self.closing:
            return
        try:
            data = encode_message(message, max_frame_size=self.server.max_frame_size)
        except ProtocolError:
            log.exception("cannot encode %s for a client", type(message).__name__)
            return
        transport = self.writer.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("closing a connection that stopped reading (%d bytes queued)",
                        transport.get_write_buffer_size())
            self.close()
            return
        self.writer.write(data)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.writer.close()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class DaemonServer:
    """Serves `manager` on a Unix socket; `serve()` returns when stopped."""

    def __init__(self, manager: SessionManager, *, socket_path: str, database: str, log_file: str,
                 state_dir: str, max_frame_size: int, check_peer_uid: bool = True,
                 auth_token: str | None = None):
        self.manager = manager
        self.socket_path = socket_path
        self.database = database
        self.log_file = log_file
        self.state_dir = state_dir
        self.max_frame_size = max_frame_size
        self.check_peer_uid = check_peer_uid
        self.auth_token = auth_token
        self.started = time.time()
        self.connections: set[Connection] = set()
        self._stopped: asyncio.Event | None = None
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Bind and listen (the caller has taken the daemon lock and removed a stale socket)."""
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_unix_server(self._handle, path=self.socket_path,
                                                       limit=READ_CHUNK)
        os.chmod(self.socket_path, 0o600)

    async def serve(self) -> None:
        assert self._stopped is not None, "call start() first"
        await self._stopped.wait()
        self._server.close()
        for conn in list(self.connections):
            conn.close()
        try:
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        except asyncio.TimeoutError:
            log.warning("some connections did not close within 2 s")

    def stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    # -- one connection -------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self, reader, writer)
        self.connections.add(conn)
        try:
            refusal = self._peer_refusal(writer)
            if refusal:
                log.warning(refusal)
                conn.send(m.Reject(reason=refusal, protocol=PROTOCOL_VERSION))
                return
            await self._serve_connection(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away mid-frame: nothing to answer
        except Exception:
            log.exception("internal error while serving a connection; closing it")
            conn.send(m.Error(code="internal", message="the daemon hit an internal error; see its log"))
        finally:
            self.connections.discard(conn)
            if conn.member is not None and conn.session is not None:
                self.manager.leave(conn.session, conn.member)
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except (Exception, asyncio.CancelledError):
                pass
            conn.close()

    def _peer_refusal(self, writer: asyncio.StreamWriter) -> str | None:
        if not self.check_peer_uid or not hasattr(socket, "SO_PEERCRED"):
            return None  # elsewhere the 0700 socket directory is the protection
        sock = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            return (f"refused a connection from pid {pid} of uid {uid}: this daemon serves only uid "
                    f"{os.getuid()}; start your own daemon (TRACE_DAEMON_SOCKET)")
        return None

    async def _serve_connection(self, conn: Connection) -> None:
        decoder = FrameDecoder(max_frame_size=self.max_frame_size)
        handshaken = False
        while not conn.closing:
            try:
                data = await (conn.reader.read(READ_CHUNK) if handshaken else
                              asyncio.wait_for(conn.reader.read(READ_CHUNK), HANDSHAKE_TIMEOUT_S))
            except asyncio.TimeoutError:
                conn.send(m.Error(code="handshake_timeout",
                                  message=f"no hello within {HANDSHAKE_TIMEOUT_S:g} s; closing"))
                return
            if not data:
                return
            messages = decoder.feed(data)
            while True:
                try:
                    message = next(messages)
                except StopIteration:
                    break
                except VersionMismatch as exc:
                    conn.send(m.Reject(reason=str(exc), protocol=PROTOCOL_VERSION))
                    return
                except InvalidMessage as exc:
                    if not handshaken:
                        conn.send(m.Error(code="invalid_message", message=f"bad hello: {exc}"))
                        return
                    conn.send(m.Error(code="invalid_message", message=str(exc)))
                    messages = decoder.feed(b"")  # the bad frame was consumed; go on after it
                    continue
                except (FrameTooLarge, MalformedFrame, ProtocolError) as exc:
                    code = "frame_too_large" if isinstance(exc, FrameTooLarge) else "malformed_frame"
                    log.info("closing a connection after a bad frame: %s", exc)
                    conn.send(m.Error(code=code, message=f"{exc}; closing this connection"))
                    return
                if not handshaken:
                    if not self._handshake(conn, message):
                        return
                    handshaken = True
                else:
                    self._dispatch(conn, message)
                if conn.closing:
                    return

    def _handshake(self, conn: Connection, hello: Any) -> bool:
        if not isinstance(hello, m.Hello):
            conn.send(m.Error(code="expected_hello",
                              message=f"the first message must be a hello, got {type(hello).__name__}"))
            return False
        try:
            check_hello(hello, auth_token=self.auth_token)
        except ProtocolError as exc:
            conn.send(m.Reject(reason=str(exc), protocol=PROTOCOL_VERSION))
            return False
        if not hello.session:
            conn.send(m.Welcome(protocol=PROTOCOL_VERSION, daemon_pid=os.getpid(), client_id=0, session="",
                                version=0))
            return True
        session, member = self.manager.join(hello, conn.send)
        conn.session, conn.member = session, member
        conn.send(m.Welcome(protocol=PROTOCOL_VERSION, daemon_pid=os.getpid(), client_id=member.client_id,
                            session=session.name, version=self.manager.store.latest_version(session.name)))
        patch = session.catch_up_patch()
        if patch is not None:
            conn.send(patch)
        log.info("pid %d joined session %r as client %d", hello.pid, session.name, member.client_id)
        return True

    def _dispatch(self, conn: Connection, message: Any) -> None:
        if isinstance(message, m.StatusQuery):
            conn.send(m.StatusReply(request_id=message.request_id, status=self.status()))
            return
        if isinstance(message, m.Request):
            conn.spawn(self._admin(conn, message))
            return
        if isinstance(message, m.Unknown):
            return  # a newer minor version's message: ignore, as the protocol says
        session, member = conn.session, conn.member
        if session is None or member is None:
            conn.send(m.Error(code="no_session", message=f"{type(message).__name__} needs a session: "
                              "connect with a non-empty Hello.session"))
            return
        if isinstance(message, m.EventBatch):
            session.ingest(member, message)
        elif isinstance(message, m.Definitions):
            session.define(member, message)
        elif isinstance(message, m.Feedback):
            session.add_feedback(member, message)
        elif isinstance(message, m.EpisodeClosed):
            session.close_episode(member, message.episode)
        elif isinstance(message, m.PatchAck):
            session.record_ack(member, message)
        elif isinstance(message, m.StepRequest):
            conn.spawn(self._step(conn, session, message))
        else:
            conn.send(m.Error(code="unexpected_message",
                              message=f"a daemon does not accept {type(message).__name__} messages"))

    async def _step(self, conn: Connection, session: Session, request: m.StepRequest) -> None:
        try:
            result = await session.step(dict(request.options))
        except Exception as exc:  # e.g. the database failed: the requester must still get an answer
            log.exception("step of session %s failed", session.name)
            conn.send(m.StepDone(request_id=request.request_id, version=None,
                                 error=f"the daemon failed to run the step: {type(exc).__name__}: {exc}; "
                                       f"see its log", error_kind="step_failed"))
            return
        conn.send(m.StepDone(request_id=request.request_id, version=result.version if result.ok else None,
                             changes=result.changes, error=result.error, error_kind=result.error_kind))

    # -- admin requests ---------------------------------------------------------

    async def _admin(self, conn: Connection, request: m.Request) -> None:
        handler = getattr(self, f"_cmd_{request.command}", None)
        if handler is None:
            known = sorted(name[5:] for name in dir(self) if name.startswith("_cmd_"))
            conn.send(m.Reply(request_id=request.request_id, ok=False,
                              error=f"unknown command {request.command!r} (known: {', '.join(known)})"))
            return
        try:
            data = handler(dict(request.args))
            if asyncio.iscoroutine(data):
                data = await data
        except (SessionError, StoreError, UnknownFormat, KeyError, ValueError, TypeError) as exc:
            message = f"missing argument {exc}" if isinstance(exc, KeyError) else str(exc)
            conn.send(m.Reply(request_id=request.request_id, ok=False, error=message))
            return
        conn.send(m.Reply(request_id=request.request_id, ok=True, data=data))

    def _cmd_stop(self, args: dict[str, Any]) -> dict[str, Any]:
        # Stop after this reply has been queued.
        asyncio.get_running_loop().call_soon(self.stop)
        return {"pid": os.getpid()}

    def _cmd_rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        session = self.manager.session(args["session"])
        record = session.rollback(args.get("version"))
        return {"version": record.version, "rollback_of": record.rollback_of, "changes": record.changes,
                "processes": len(session.members)}

    def _cmd_graph(self, args: dict[str, Any]) -> str:
        fmt = args.get("format", "dot")
        if fmt not in FORMATS:
            raise UnknownFormat(f"unknown graph format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return export_graph(self.manager.session(args["session"]).graph(args.get("episode")), fmt)

    def _cmd_parameters(self, args: dict[str, Any]) -> dict[str, Any]:
        store = self.manager.store
        session = args["session"]
        store.session(session)
        version = args.get("version")
        record = store.version(session, store.latest_version(session) if version is None else int(version))
        return {"version": record.version, "params": record.params}

    def _cmd_versions(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        store = self.manager.store
        session = args["session"]
        store.session(session)
        return [{"version": v.version, "origin": v.origin, "step_id": v.step_id, "rollback_of": v.rollback_of,
                 "created": v.created, "changes": v.changes,
                 "applied_by": [a["pid"] for a in store.applications(session, v.version) if a["ok"]]}
                for v in store.versions(session)]

    def _cmd_steps(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        self.manager.store.session(args["session"])
        return self.manager.store.steps(args["session"])

    def status(self) -> dict[str, Any]:
        """What `trace-daemon status` shows."""
        store = self.manager.store
        sessions = self.manager.status()
        return {
            "pid": os.getpid(),
            "started": self.started,
            "uptime_s": round(time.time() - self.started, 1),
            "socket": self.socket_path,
            "database": self.database,
            "log": self.log_file,
            "state_dir": self.state_dir,
            "protocol": list(PROTOCOL_VERSION),
            "python": sys.version.split()[0],
            "connections": len(self.connections),
            "sessions": sessions,
            "llm": store.llm_totals(),
        }
