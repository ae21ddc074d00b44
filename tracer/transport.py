"""The traced process's connection to the optimizer daemon.

One `Transport` per process speaks the framed protocol (docs/internals.md §1)
over a Unix socket:

    transport = Transport(path, make_hello)
    welcome = transport.connect()            # Hello -> Welcome, or raises
    transport.add_handler(m.Patch, on_patch) # called on the receiver thread
    transport.send(m.EventBatch(...))        # any thread; frames never interleave
    reply = transport.request(m.StatusQuery(request_id=transport.next_request_id()), timeout=2)

A receiver thread reads frames, completes waiting `request()` calls by
`request_id` and hands every other message to the handlers registered for
its class. When the daemon goes away mid-run the same thread reconnects with
exponential backoff and re-sends Hello; `generation` goes up by one for every
new connection, so a sender can tell (`send(..., generation=g)`) that the
daemon it is talking to no longer knows what it sent before and must be told
the definitions again.

Nothing here writes to stdout; the only stderr output is the reason of a
Reject, once per process (the runtime prints the "tracing is off" line).
"""
from __future__ import annotations

import itertools
import random
import socket
import sys
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Final

from protocol import messages as m
from protocol.errors import ProtocolError, VersionMismatch
from protocol.framing import FrameDecoder, encode_message
from protocol.handshake import check_welcome

from tracer.errors import NotConnected, TracerError

# Messages that answer a request; they are matched to the waiting caller by
# request_id. A Patch carries a request_id too, but only as information: it is
# broadcast to every process of the session and goes to the Patch handlers.
_REPLY_TYPES: Final = (m.StepDone, m.Reply, m.StatusReply, m.Error)

_RECV_CHUNK: Final = 256 * 1024
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 2.0


class TransportError(TracerError):
    """Base class of the errors of the daemon connection."""


class DaemonUnavailable(NotConnected, TransportError):
    """No daemon answered at the socket path; the message says why and what to do."""


class HandshakeRejected(NotConnected, TransportError):
    """The daemon answered the Hello with a Reject; `reason` is the daemon's text."""

    def __init__(self, reason: str):
        super().__init__(f"the optimizer daemon rejected this process: {reason}")
        self.reason = reason


class ConnectionLost(NotConnected, TransportError):
    """The connection dropped while a request was waiting for its reply."""


class ConnectionChanged(TransportError):
    """`send(..., generation=g)` found a newer connection than `g`: re-send what the daemon needs first."""


class RequestTimeout(TransportError):
    """The daemon did not answer a request in time (it may still be working on it)."""


class DaemonError(TransportError):
    """The daemon answered a request with an Error message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _PendingRequest:
    __slots__ = ("done", "reply", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Any = None
        self.error: BaseException | None = None


class Transport:
    """A client connection to the daemon that survives daemon restarts and fork().

    `make_hello()` is called for every handshake (so a forked child sends its
    own pid). `connect_timeout` bounds one connection attempt including the
    handshake; `send_timeout` is how long a send may stall on a daemon that
    stopped reading before the connection is given up and re-established.
    `on_thread_start()` runs first on the receiver thread (the runtime turns
    tracing off there, so handlers never trace themselves).
    """

    def __init__(
        self,
        socket_path: str,
        make_hello: Callable[[], m.Hello],
        *,
        connect_timeout: float = 0.5,
        send_timeout: float = 10.0,
        reconnect: bool = True,
        on_thread_start: Callable[[], None] = lambda: None,
    ) -> None:
        self.socket_path = socket_path
        self._make_hello = make_hello
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._reconnect = reconnect
        self._on_thread_start = on_thread_start
        self._handlers: dict[type, list[Callable[[Any], None]]] = defaultdict(list)
        self._connect_listeners: list[Callable[[m.Welcome], None]] = []
        self._request_ids = itertools.count(1)
        self._init_connection_state()

    def _init_connection_state(self) -> None:
        # Everything here is per process: a forked child calls this again.
        self._send_lock = threading.RLock()
        self._pending_lock = threading.Lock()
        self._pending: dict[int, _PendingRequest] = {}
        self._sock: socket.socket | None = None
        self._connected = threading.Event()
        self._decoder: FrameDecoder | None = None
        self._closing = threading.Event()
        self._receiver: threading.Thread | None = None
        self._reject_shown = False
        self.welcome: m.Welcome | None = None
        self.generation = 0
        self.last_error: str | None = None
        self.bytes_sent = 0
        self.frames_sent = 0
        self.reconnects = 0
        self.handler_errors = 0

    # -- public API --------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a handshaken connection is open."""
        return self._sock is not None

    def connect(self) -> m.Welcome:
        """Connect and handshake now, then start the receiver thread.

        Raises `DaemonUnavailable` (nothing listening, refused, timed out) or
        `HandshakeRejected`. After a failure the transport does not retry on
        its own; call `connect()` again or `close()`.
        """
        sock, decoder, welcome, early = self._open_connection()
        self._install(sock, decoder, welcome)
        self._start_receiver()
        self._dispatch_all(early)
        return welcome

    def send(self, msg: Any, *, generation: int | None = None) -> int:
        """Send one message; return the number of bytes written.

        Raises `NotConnected` when there is no connection (the receiver thread
        is reconnecting, or tracing is off) and `ConnectionChanged` when
        `generation` is given and the connection is newer than it; a message
        that cannot be encoded raises the protocol's `ProtocolError`.
        """
        return self.send_frame(encode_message(msg), generation=generation)

    def send_frame(self, data: bytes, *, generation: int | None = None) -> int:
        """Send one frame already encoded with `protocol.encode_message` (see `send`)."""
        with self._send_lock:
            sock = self._sock
            if sock is None:
                raise NotConnected(f"not connected to the optimizer daemon ({self.last_error or 'not started'})")
            if generation is not None and generation != self.generation:
                raise ConnectionChanged(f"connection {self.generation} replaced connection {generation}")
            try:
                sock.sendall(data)
            except OSError as exc:  # includes socket.timeout: a stalled daemon
                # A partial frame may be on the wire: this connection is unusable.
                self._drop(sock, f"send failed: {exc or type(exc).__name__}")
                raise NotConnected(f"lost the connection to the optimizer daemon: {self.last_error}") from None
            self.bytes_sent += len(data)
            self.frames_sent += 1
        return len(data)

    @property
    def reconnecting(self) -> bool:
        """True while the connection is down and the receiver thread is trying to restore it."""
        receiver = self._receiver
        return (self._sock is None and not self._closing.is_set()
                and receiver is not None and receiver.is_alive())

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected (at most `timeout` s); False at once if nobody is reconnecting."""
        if self._sock is not None:
            return True
        if not self.reconnecting:
            return False
        return self._connected.wait(timeout)

    def next_request_id(self) -> int:
        """A request id unique within this process."""
        return next(self._request_ids)

    def request(self, msg: Any, timeout: float) -> Any:
        """Send `msg` (which carries a `request_id`) and return the daemon's answer.

        Returns the StepDone / Reply / StatusReply with the same request_id.
        Raises `DaemonError` if the daemon answered with an Error,
        `RequestTimeout` after `timeout` seconds, `ConnectionLost` if the
        connection dropped first, `NotConnected` if there is none.
        """
        request_id = msg.request_id
        pending = _PendingRequest()
        with self._pending_lock:
            self._pending[request_id] = pending
        try:
            self.send(msg)
            if not pending.done.wait(timeout):
                raise RequestTimeout(
                    f"the optimizer daemon did not answer {type(msg).__name__} #{request_id} "
                    f"within {timeout:g} s; pass a longer timeout if the step is slow"
                )
        finally:
            with self._pending_lock:
                self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error
        reply = pending.reply
        if isinstance(reply, m.Error):
            raise DaemonError(reply.code, reply.message)
        return reply

    def add_handler(self, message_type: type, handler: Callable[[Any], None]) -> None:
        """Call `handler(msg)` on the receiver thread for each message of `message_type`.

        An exception from a handler is counted in `handler_errors` and
        otherwise ignored: it must not stop the receiver.
        """
        self._handlers[message_type].append(handler)

    def add_connect_listener(self, listener: Callable[[m.Welcome], None]) -> None:
        """Call `listener(welcome)` on the receiver thread after every reconnection."""
        self._connect_listeners.append(listener)

    def close(self) -> None:
        """Close the connection and stop the receiver thread (idempotent)."""
        self._closing.set()
        sock = self._sock
        if sock is not None:
            try:
                # Wakes the receiver's recv() and a sender blocked in sendall()
                # on a stalled daemon (which holds the send lock).
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._send_lock:
            self._sock = None
            self._connected.clear()
        if sock is not None:
            sock.close()
        self._fail_pending(ConnectionLost("the tracer closed its connection to the optimizer daemon"))
        receiver = self._receiver
        if receiver is not None and receiver is not threading.current_thread():
            receiver.join(timeout=1.0)

    def after_fork_in_child(self) -> None:
        """Forget the parent's connection and threads; reconnect as a new client in the background.

        Must run in the child right after fork (the runtime registers it with
        `os.register_at_fork`). The parent's socket is closed in the child
        without `shutdown()`, which would cut the parent's connection too.
        """
        old_sock = self._sock
        reconnect = self._reconnect and not self._closing.is_set() and self.welcome is not None
        self._init_connection_state()
        if old_sock is not None:
            try:
                old_sock.close()
            except OSError:
                pass
        if reconnect:
            self._start_receiver()

    # -- connection --------------------------------------------------------

    def _open_connection(self) -> tuple[socket.socket, FrameDecoder, m.Welcome, list]:
        """Connect and handshake; return the socket, its decoder, the Welcome and
        any messages that arrived in the same read as the Welcome."""
        deadline = time.monotonic() + self._connect_timeout
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            raise DaemonUnavailable(f"cannot create a Unix socket: {exc}") from None
        try:
            sock.settimeout(self._connect_timeout)
            try:
                sock.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError):
                raise DaemonUnavailable(f"no optimizer daemon is listening at {self.socket_path}") from None
            except socket.timeout:
                raise DaemonUnavailable(
                    f"the optimizer daemon at {self.socket_path} did not accept within {self._connect_timeout:g} s"
                ) from None
            except OSError as exc:
                raise DaemonUnavailable(f"cannot connect to {self.socket_path}: {exc}") from None
            decoder = FrameDecoder()
            welcome, early = self._handshake(sock, decoder, deadline)
            sock.settimeout(self._send_timeout)
            return sock, decoder, welcome, early
        except BaseException:
            sock.close()
            raise

    def _handshake(self, sock: socket.socket, decoder: FrameDecoder, deadline: float) -> tuple[m.Welcome, list]:
        # Built outside the try: a Hello that cannot be encoded is this
        # process's bug, not a daemon that "does not speak the protocol".
        hello = encode_message(self._make_hello())
        try:
            sock.sendall(hello)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()  # a daemon trickling bytes gets no more time than a silent one
                sock.settimeout(remaining)
                chunk = sock.recv(_RECV_CHUNK)
                if not chunk:
                    raise DaemonUnavailable(
                        f"the optimizer daemon at {self.socket_path} closed the connection during the handshake"
                    )
                messages = list(decoder.feed(chunk))
                if messages:
                    break
        except socket.timeout:
            raise DaemonUnavailable(
                f"the optimizer daemon at {self.socket_path} did not answer the handshake "
                f"within {self._connect_timeout:g} s"
            ) from None
        except VersionMismatch as exc:
            raise HandshakeRejected(str(exc)) from None
        except ProtocolError as exc:
            raise DaemonUnavailable(f"the process at {self.socket_path} does not speak the trace protocol: {exc}") from None
        except OSError as exc:
            raise DaemonUnavailable(f"handshake with {self.socket_path} failed: {exc}") from None
        first, rest = messages[0], messages[1:]
        if isinstance(first, m.Reject):
            raise HandshakeRejected(first.reason)
        if not isinstance(first, m.Welcome):
            raise DaemonUnavailable(
                f"the optimizer daemon at {self.socket_path} answered the handshake with "
                f"{type(first).__name__} instead of Welcome"
            )
        try:
            check_welcome(first)
        except VersionMismatch as exc:
            raise HandshakeRejected(str(exc)) from None
        return first, rest

    def _install(self, sock: socket.socket, decoder: FrameDecoder, welcome: m.Welcome) -> None:
        with self._send_lock:
            self._sock = sock
            self._decoder = decoder
            self.welcome = welcome
            self.generation += 1
            self.last_error = None
            self._connected.set()

    def _drop(self, sock: socket.socket, reason: str) -> None:
        """Forget `sock` if it is still the current connection, and fail waiting requests."""
        with self._send_lock:
            if self._sock is not sock:
                return
            self._sock = None
            self._connected.clear()
            self.last_error = reason
        try:
            sock.shutdown(socket.SHUT_RDWR)  # close() alone does not wake a recv() blocked in another thread
        except OSError:
            pass
        sock.close()
        self._fail_pending(ConnectionLost(f"lost the connection to the optimizer daemon: {reason}"))

    def _fail_pending(self, error: BaseException) -> None:
        with self._pending_lock:
            pending, self._pending = list(self._pending.values()), {}
        for request in pending:
            request.error = error
            request.done.set()

    # -- receiver thread ---------------------------------------------------

    def _start_receiver(self) -> None:
        self._receiver = threading.Thread(target=self._receive_loop, name="trace-live-receiver", daemon=True)
        self._receiver.start()

    def _receive_loop(self) -> None:
        self._call_safely(lambda _: self._on_thread_start(), None)
        attempts = 0
        while not self._closing.is_set():
            sock = self._sock
            if sock is None:
                if not self._reconnect or not self._reconnect_once(attempts):
                    return
                attempts = attempts + 1 if self._sock is None else 0
                continue
            try:
                chunk = sock.recv(_RECV_CHUNK)
            except socket.timeout:
                continue
            except OSError as exc:
                self._drop(sock, f"receive failed: {exc}")
                continue
            if not chunk:
                self._drop(sock, "the optimizer daemon closed the connection")
                continue
            try:
                messages = self._decoder.feed(chunk)  # type: ignore[union-attr]
                messages = list(messages)
            except ProtocolError as exc:
                self._drop(sock, f"bad frame from the optimizer daemon: {exc}")
                continue
            self._dispatch_all(messages)

    def _reconnect_once(self, attempt: int) -> bool:
        """Wait the backoff for `attempt`, then try once. Return False to stop the receiver."""
        if attempt:
            delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (attempt - 1))
            if self._closing.wait(delay * random.uniform(0.75, 1.25)):
                return False
        try:
            sock, decoder, welcome, early = self._open_connection()
        except HandshakeRejected as exc:
            self.last_error = str(exc)
            self.show_reject(exc.reason)
            return False  # a daemon that rejects us once will reject us again
        except DaemonUnavailable as exc:
            self.last_error = str(exc)
            return True
        if self._closing.is_set():
            sock.close()
            return False
        self._install(sock, decoder, welcome)
        self.reconnects += 1
        for listener in list(self._connect_listeners):
            self._call_safely(listener, welcome)
        self._dispatch_all(early)
        return True

    def show_reject(self, reason: str) -> None:
        """Print the daemon's reject reason on stderr, once per process."""
        if self._reject_shown:
            return
        self._reject_shown = True
        try:
            print(f"trace-live: the optimizer daemon rejected this process: {reason}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass  # stderr closed by the program: nothing to report to

    def _dispatch_all(self, messages: list) -> None:
        for msg in messages:
            self._dispatch(msg)

    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, _REPLY_TYPES) and msg.request_id is not None:
            with self._pending_lock:
                pending = self._pending.get(msg.request_id)
            if pending is not None:
                pending.reply = msg
                pending.done.set()
                return
        for handler in self._handlers.get(type(msg), ()):
            self._call_safely(handler, msg)

    def _call_safely(self, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            self.handler_errors += 1
