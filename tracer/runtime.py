"""Process-wide tracer state: connect at start, flush in the background, apply patches, stop at exit.

    from tracer import runtime
    runtime.start(RuntimeConfig(session="qa"))   # or a tracer.config.TraceConfig
    ...                                          # the program runs, traced
    runtime.new_episode()                        # release this episode's values
    runtime.stats()                              # what was sent, dropped, reconnected

`start()` connects to the optimizer daemon (starting it on demand unless
autostart is off), applies the session's latest patch before returning (so
the program's first line already runs the optimised parameters), and starts
the flusher. If no daemon can be reached, it prints ONE line on stderr saying
that tracing is off, why, and how to turn it on, and the program runs
untraced. Nothing here raises into the program except `start()` given an
invalid config; API helpers (`request`, `send`) raise `TracerError`
subclasses, and only when a user called the API on purpose.

The API layer (`tracer.api`) builds on `send`, `request`, `flush`,
`new_episode`, `note_feedback`, `with_resolver`, `wait_for_patch` and
`add_patch_listener`.

Forked children drop the parent's connection and threads and reconnect as a
new client with empty buffers (`os.register_at_fork`).
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Final, Protocol

from protocol import messages as m
from protocol.handshake import client_hello

from tracer import buffers
from tracer.errors import NotConnected
from tracer.flusher import (
    DEFAULT_BACKPRESSURE_WAIT,
    DEFAULT_INTERVAL,
    DEFAULT_MAX_EPISODE_RECORDS,
    DEFAULT_MAX_PENDING_BYTES,
    DefinitionTracker,
    Flusher,
)
from tracer.transport import DaemonUnavailable, HandshakeRejected, Transport

AUTH_TOKEN_ENV: Final = "TRACE_AUTH_TOKEN"
_PATCH_HISTORY: Final = 64


class InProcessService(Protocol):
    """What `RuntimeConfig.service_factory()` returns: an optimizer served from a thread of this process."""

    socket_path: str

    def stop(self) -> None: ...


@dataclass
class RuntimeConfig:
    """How `start()` connects and how much it may buffer.

    `socket_path` None means TRACE_DAEMON_SOCKET or the per-user default.
    `service_factory` (for `trace-run --in-process`) starts an optimizer
    service in this process and returns it; its socket is used instead of a
    daemon's, and it is stopped by `stop()`.
    """

    session: str | None = None
    socket_path: str | None = None
    granularity: str = "call"
    autostart: bool = True
    service_factory: Callable[[], InProcessService] | None = None
    client_name: str = ""
    connect_timeout: float = 0.5        # one attempt, handshake included
    autostart_timeout: float = 5.0      # starting the daemon (once per user, not per process)
    initial_patch_timeout: float = 2.0  # waiting for the session's latest patch at start
    exit_flush_timeout: float = 2.0     # atexit: time to send what is left
    flush_interval: float = DEFAULT_INTERVAL
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES  # encoded frames waiting for a slow or absent daemon
    max_episode_records: int = DEFAULT_MAX_EPISODE_RECORDS
    buffer_limit: int | None = None     # records per thread before back-pressure (None: buffers' default)
    # Say on stderr (once) that tracing is off. Child processes started by a
    # traced program pass False: the parent already said it, and a child's
    # stderr is often parsed by the program that started it.
    announce_off: bool = True
    backpressure_wait: float = DEFAULT_BACKPRESSURE_WAIT  # a full buffer waits this long for a drain, then drops

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "RuntimeConfig":
        """Build from any object with `session`, `granularity`, `autostart` attributes
        (a `tracer.config.TraceConfig`), plus explicit overrides such as `service_factory`."""
        names = ("session", "granularity", "autostart")
        values = {name: getattr(settings, name) for name in names if hasattr(settings, name)}
        values.update(overrides)
        return cls(**values)

    def resolved_session(self) -> str:
        """The session name: the configured one, else the script's name, else "default"."""
        if self.session:
            return self.session
        script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        stem = os.path.splitext(script)[0]
        return stem if stem and stem not in ("-c", "-m", "__main__") else "default"


@dataclass
class RuntimeStats:
    """A snapshot of what the tracer did in this process (since start, or since fork)."""

    connected: bool
    tracing_off_reason: str | None
    session: str | None
    client_id: int | None
    episode: int
    events_sent: int = 0
    batches_sent: int = 0
    bytes_sent: int = 0
    dropped: int = 0
    pending_events: int = 0
    pending_bytes: int = 0
    reconnects: int = 0
    episodes_closed: int = 0
    episodes_auto_rolled: int = 0
    patches_applied: int = 0
    applied_version: int = 0
    internal_errors: int = 0
    last_error: str | None = None
    last_daemon_error: str | None = None   # an Error the daemon sent that answered no request


@dataclass
class _PatchOutcome:
    version: int
    results: list[m.PatchResult]
    request_id: int | None = None


class Runtime:
    """The tracer state of one process. Use the module functions; this is their implementation."""

    def __init__(self, config: RuntimeConfig):
        self.config = config
        self.session = config.resolved_session()
        self.transport: Transport | None = None
        self.flusher: Flusher | None = None
        self.service: InProcessService | None = None
        self.tracing_off_reason: str | None = None
        self.last_daemon_error: str | None = None
        self._resolver: Any = None          # tracer.provenance.Resolver, used on the flusher thread
        self._patch_lock = threading.Lock()         # one patch applied at a time
        self._patches = threading.Condition()
        self._outcomes: dict[int, _PatchOutcome] = {}
        self._patch_listeners: list[Callable[[m.Patch, list[m.PatchResult]], None]] = []
        self.applied_version = 0        # the parameter version live in this process
        self._highest_handled = 0       # the newest patch handled, applied or not
        self.patches_applied = 0
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> bool:
        """Connect, apply the initial patch, start the flusher. True if tracing is on."""
        try:
            return self._start()
        except Exception as exc:  # a tracer bug must not stop the program from starting
            if self.transport is not None:
                self.transport.close()
            if self.flusher is not None:
                buffers.set_overflow_handler(None)
                self.flusher.stop(0)
                self.flusher = None
            return self._tracing_off(f"internal error while starting ({type(exc).__name__}: {exc}); "
                                     "please report it")

    def _start(self) -> bool:
        try:
            from tracer import provenance

            self._resolver = provenance.Resolver()
        except Exception as exc:  # the rewriter's side is missing or broken
            return self._tracing_off(f"the tracer's provenance resolver cannot start: {type(exc).__name__}: {exc}")
        try:
            socket_path = self._socket_path()
        except Exception as exc:  # a LocationError or a failing in-process service
            return self._tracing_off(str(exc))
        self.transport = Transport(
            socket_path, self._hello, connect_timeout=self.config.connect_timeout,
            on_thread_start=buffers.suppress_current_thread,
        )
        self.transport.add_handler(m.Patch, self._on_patch)
        self.transport.add_handler(m.Error, self._on_daemon_error)
        try:
            welcome = self._connect()
        except HandshakeRejected as exc:
            return self._tracing_off(f"the optimizer daemon rejected this process: {exc.reason}")
        except DaemonUnavailable as exc:
            return self._tracing_off(str(exc))
        from tracer import hooks

        hooks.enable()  # a runtime started again after tracing was off
        if self.config.buffer_limit is not None:
            buffers.set_limit(self.config.buffer_limit)
        self.flusher = Flusher(
            self.transport,
            drain=buffers.drain,
            convert=self._resolver.convert,
            release=self._resolver.release,
            definitions=DefinitionTracker(_RegistryLookup()),
            take_dropped=buffers.take_dropped,
            suppress_tracing=buffers.suppress_current_thread,
            interval=self.config.flush_interval,
            max_pending_bytes=self.config.max_pending_bytes,
            max_episode_records=self.config.max_episode_records,
        )
        self.flusher.start()
        buffers.set_overflow_handler(self._on_buffer_overflow)
        if welcome.version > self.applied_version:
            # The daemon follows the Welcome with the session's latest Patch.
            self.wait_for_version(welcome.version, self.config.initial_patch_timeout)
        return True

    def _socket_path(self) -> str:
        if self.config.service_factory is not None:
            self.service = self.config.service_factory()
            return str(self.service.socket_path)
        if self.config.socket_path:
            return str(self.config.socket_path)
        from protocol import locations

        return str(locations.socket_path(create=False))

    def _hello(self) -> m.Hello:
        return client_hello(
            self.session, auth_token=os.environ.get(AUTH_TOKEN_ENV) or None,
            granularity=self.config.granularity, client_name=self.config.client_name,
        )

    def _connect(self) -> m.Welcome:
        assert self.transport is not None
        try:
            return self.transport.connect()
        except DaemonUnavailable as first_error:
            if self.service is not None:
                raise
            from tracer.autostart import autostart_enabled

            if not (self.config.autostart and autostart_enabled()):
                raise DaemonUnavailable(
                    f"{first_error}; start one with 'trace-daemon start' "
                    f"(starting it automatically is disabled: TRACE_AUTOSTART=0)"
                ) from None
            problem = _autostart(self.config.autostart_timeout)
            if problem is not None:
                raise DaemonUnavailable(f"{first_error}, and starting one failed: {problem}") from None
            return self.transport.connect()

    def _tracing_off(self, reason: str) -> bool:
        self.tracing_off_reason = reason
        try:
            # Nothing will drain the buffers: marked code must stop recording.
            from tracer import hooks

            hooks.disable()
            buffers.drain()
        except Exception as exc:  # the hot path itself is broken: still say why, once
            reason = f"{reason} (and the hooks could not be turned off: {type(exc).__name__}: {exc})"
        one_line = " ".join(reason.split())
        if self.config.announce_off:
            try:
                print(f"trace-live: tracing is off: {one_line}", file=sys.stderr, flush=True)
            except (OSError, ValueError):
                pass
        if self.service is not None:
            _stop_quietly(self.service)
            self.service = None
        return False

    def stop(self, timeout: float | None = None) -> bool:
        """Flush what is left (bounded), close the connection, stop the threads. True if all was sent."""
        if self._stopped:
            return True
        self._stopped = True
        timeout = self.config.exit_flush_timeout if timeout is None else timeout
        flushed = True
        if self.flusher is not None:
            buffers.set_overflow_handler(None)
            flushed = self.flusher.stop(timeout)
        if self.transport is not None:
            self.transport.close()
        if self.service is not None:
            _stop_quietly(self.service)
        return flushed

    @property
    def connected(self) -> bool:
        return self.transport is not None and self.transport.connected and not self._stopped

    # -- episodes ----------------------------------------------------------

    def new_episode(self, timeout: float) -> int:
        if self.flusher is None:
            raise NotConnected(self._off_message())
        return self.flusher.new_episode(timeout)

    def _off_message(self) -> str:
        return f"tracing is off: {self.tracing_off_reason or 'the tracer runtime was stopped'}"

    # -- patches -----------------------------------------------------------

    def _on_patch(self, patch: m.Patch) -> None:
        """Receiver thread: apply `patch`, acknowledge it, wake whoever waits for it."""
        with self._patch_lock:
            results = _apply_patch(patch)
        try:
            assert self.transport is not None
            self.transport.send(m.PatchAck(version=patch.version, results=results))
        except NotConnected:
            pass  # the daemon is gone; after reconnecting it resends the latest patch
        with self._patches:
            self._outcomes[patch.version] = _PatchOutcome(patch.version, results, patch.request_id)
            while len(self._outcomes) > _PATCH_HISTORY:
                del self._outcomes[min(self._outcomes)]
            self._highest_handled = max(self._highest_handled, patch.version)
            if all(result.ok for result in results):  # the patcher rolls back a patch that fails
                self.applied_version = max(self.applied_version, patch.version)
                self.patches_applied += 1
            self._patches.notify_all()
        for listener in list(self._patch_listeners):
            try:
                listener(patch, results)
            except Exception:
                pass

    def wait_for_version(self, version: int, timeout: float) -> list[m.PatchResult] | None:
        """Wait until the patch `version` was handled here; return its per-item results (None on timeout)."""
        with self._patches:
            self._patches.wait_for(lambda: version in self._outcomes or self._highest_handled >= version, timeout)
            outcome = self._outcomes.get(version)
        return outcome.results if outcome is not None else None

    def _on_daemon_error(self, error: m.Error) -> None:
        """An Error that answers no waiting request (e.g. about a frame this process sent): keep it for stats()."""
        self.last_daemon_error = f"{error.code}: {error.message}"

    def add_patch_listener(self, listener: Callable[[m.Patch, list[m.PatchResult]], None]) -> None:
        self._patch_listeners.append(listener)

    def _on_buffer_overflow(self, buffer: list) -> None:
        if self.flusher is not None:
            self.flusher.backpressure(self.config.backpressure_wait)

    # -- fork --------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """The child is a new client: empty buffers, nothing sent, a new connection in the background."""
        self._patch_lock = threading.Lock()
        self._patches = threading.Condition()
        buffers.drain()       # the parent's records are the parent's to send
        buffers.take_dropped()
        if self.flusher is not None:
            self.flusher.after_fork_in_child()
        if self._resolver is not None:
            # Node ids handed out in the parent mean nothing to the daemon for this new client.
            self._resolver.release()
        if self.transport is not None:
            self.transport.after_fork_in_child()
        # The in-process service's threads did not survive the fork; its
        # socket is still served by the parent, so the child connects there.
        self.service = None

    def our_threads(self) -> int:
        """How many threads of this process are the tracer's own (alive)."""
        count = len(self.flusher.threads()) if self.flusher is not None else 0
        if self.transport is not None and (self.transport.connected or self.transport.reconnecting):
            count += 1  # the receiver thread
        return count


def _stop_quietly(service: InProcessService) -> None:
    try:
        service.stop()
    except Exception:
        pass


def _apply_patch(patch: m.Patch) -> list[m.PatchResult]:
    """Apply through the patcher; never raise (a failure is reported per item in the ack)."""
    try:
        from tracer.patcher import apply_patch
    except ImportError as exc:
        return [m.PatchResult(name=item.name, ok=False, error=f"this process cannot apply patches: {exc}") for item in patch.items]
    try:
        # A module this process has not imported yet (or never imports) must not
        # make it refuse the rest of the version: new source for its functions waits.
        return list(apply_patch(patch, defer_unknown_sources=True))
    except Exception as exc:
        return [m.PatchResult(name=item.name, ok=False, error=f"{type(exc).__name__}: {exc}") for item in patch.items]


def _autostart(timeout: float) -> str | None:
    """Start the daemon on demand; return None on success or what went wrong."""
    from tracer.autostart import ensure_daemon

    result = ensure_daemon(timeout=timeout)  # never raises
    return None if result.ok else (result.reason or "the optimizer daemon did not start")


class _RegistryLookup:
    """Definitions from the marking and parameter registries (docs/internals.md §7)."""

    def __init__(self) -> None:
        self._registry_size = -1
        self._trainable: list[int] = []

    def function_def(self, func_id: int) -> m.FunctionDef | None:
        from tracer import marking

        try:
            return marking.registry.function_def(func_id)
        except KeyError:
            return None

    def site_def(self, site_id: int) -> m.SiteDef | None:
        from tracer import marking

        try:
            return marking.registry.site_def(site_id)
        except KeyError:
            return None

    def param_defs(self) -> tuple[int, list[m.ParamDef]]:
        from tracer import params

        # Generation first: a change made while the definitions are read
        # shows up as a new generation next time, never as a missed one.
        generation = params.registry.generation
        return generation, params.registry.definitions()

    def param_generation(self) -> int:
        from tracer import params

        return params.registry.generation

    def trainable_function_ids(self) -> list[int]:
        from tracer import marking

        # Asked every flush cycle: rescan only when functions were marked since.
        size = len(marking.registry)
        if size != self._registry_size:
            self._registry_size = size
            self._trainable = [fid for fid, marked in list(marking.registry.items()) if marked.trainable]
        return self._trainable


# -- the process-wide runtime ----------------------------------------------

_current: Runtime | None = None
_start_lock = threading.Lock()


def start(config: Any = None, **overrides: Any) -> bool:
    """Start tracing this process (idempotent); return True if connected to an optimizer.

    `config` is a `RuntimeConfig`, or a `tracer.config.TraceConfig` (its
    session, granularity and autostart are used), or None for the defaults;
    keyword overrides set `RuntimeConfig` fields. Blocks for at most about
    `connect_timeout` (twice with autostart) plus `initial_patch_timeout`.
    """
    global _current
    if isinstance(config, RuntimeConfig):
        resolved = RuntimeConfig(**{**config.__dict__, **overrides})
    elif config is None:
        resolved = RuntimeConfig(**overrides)
    else:
        resolved = RuntimeConfig.from_settings(config, **overrides)
    with _start_lock:
        if _current is not None and not _current._stopped:
            return _current.connected
        runtime = Runtime(resolved)
        _current = runtime
        connected = runtime.start()
    return connected


def stop(timeout: float | None = None) -> bool:
    """Flush (bounded by `timeout`, default the config's exit_flush_timeout) and stop tracing."""
    runtime = _current
    return runtime.stop(timeout) if runtime is not None else True


def current() -> Runtime | None:
    """The process's runtime, if `start()` was called."""
    return _current


def is_connected() -> bool:
    """True while connected to an optimizer daemon (or in-process service)."""
    return _current is not None and _current.connected


def current_episode() -> int:
    """The episode that new trace events belong to (1 before anything ran)."""
    runtime = _current
    if runtime is None or runtime.flusher is None:
        return 1
    return runtime.flusher.episode


def new_episode(timeout: float = 5.0) -> int:
    """Close the current episode (flush, EpisodeClosed, release its values); return the new number.

    Raises `NotConnected` when tracing is off.
    """
    return require().new_episode(timeout)


def note_feedback() -> None:
    """Feedback was given in the current episode: do not auto-roll it for its size so far."""
    runtime = _current
    if runtime is not None and runtime.flusher is not None:
        runtime.flusher.note_feedback()


def flush(timeout: float = 5.0) -> bool:
    """Send everything traced so far; True if it was sent within `timeout` seconds."""
    runtime = _current
    if runtime is None or runtime.flusher is None:
        return False
    return runtime.flusher.flush(timeout)


def with_resolver(fn: Callable[[Any, int], Any]) -> Any:
    """Call `fn(resolver, episode)` between two flush cycles and return its result.

    For the API layer, to find the node of a value for feedback. Raises
    `NotConnected` when tracing is off.
    """
    runtime = require()
    assert runtime.flusher is not None
    with runtime.flusher.resolver_lock:
        return fn(runtime._resolver, runtime.flusher.episode)


def send(msg: Any) -> int:
    """Send one message to the daemon; raises `NotConnected` when there is no connection."""
    runtime = require()
    assert runtime.transport is not None
    return runtime.transport.send(msg)


def next_request_id() -> int:
    """A request id unique in this process."""
    runtime = require()
    assert runtime.transport is not None
    return runtime.transport.next_request_id()


def request(msg: Any, timeout: float) -> Any:
    """Send `msg` and return the daemon's reply (see `Transport.request` for the errors)."""
    runtime = require()
    assert runtime.transport is not None
    return runtime.transport.request(msg, timeout)


def wait_for_patch(version: int, timeout: float) -> list[m.PatchResult] | None:
    """The per-item results of patch `version` once it was applied here; None on timeout."""
    return require().wait_for_version(version, timeout)


def applied_version() -> int:
    """The highest parameter version this process has applied (0: none)."""
    return _current.applied_version if _current is not None else 0


def add_patch_listener(listener: Callable[[m.Patch, list[m.PatchResult]], None]) -> None:
    """Call `listener(patch, results)` after every patch this process applies (receiver thread)."""
    require().add_patch_listener(listener)


def stats() -> RuntimeStats:
    """Counters of this process's tracing (a snapshot)."""
    runtime = _current
    if runtime is None:
        return RuntimeStats(connected=False, tracing_off_reason="not started", session=None, client_id=None, episode=1)
    transport, flusher = runtime.transport, runtime.flusher
    welcome = transport.welcome if transport is not None else None
    result = RuntimeStats(
        connected=runtime.connected,
        tracing_off_reason=runtime.tracing_off_reason,
        session=runtime.session,
        client_id=welcome.client_id if welcome is not None else None,
        episode=flusher.episode if flusher is not None else 1,
        patches_applied=runtime.patches_applied,
        applied_version=runtime.applied_version,
        last_daemon_error=runtime.last_daemon_error,
    )
    if transport is not None:
        result.bytes_sent = transport.bytes_sent
        result.reconnects = transport.reconnects
    if flusher is not None:
        s = flusher.stats
        result.events_sent = s.events_sent
        result.batches_sent = s.batches_sent
        result.dropped = s.dropped
        result.pending_events = s.pending_events
        result.pending_bytes = s.pending_bytes
        result.episodes_closed = s.episodes_closed
        result.episodes_auto_rolled = s.auto_rolled
        result.internal_errors = s.internal_errors
        result.last_error = s.last_error
    return result


def require() -> Runtime:
    """The running runtime; raises `NotConnected` (saying why) when tracing is off or not started."""
    runtime = _current
    if runtime is None:
        raise NotConnected("tracing is not started: run the program with 'trace-run' or call tracer.runtime.start()")
    if runtime.flusher is None or runtime._stopped:
        raise NotConnected(runtime._off_message())
    return runtime


# -- exit and fork ---------------------------------------------------------

def _stop_at_exit() -> None:
    runtime = _current
    if runtime is not None:
        try:
            runtime.stop()
        except Exception:
            pass


# The fork warning of 3.12+ ("This process is multi-threaded, use of fork()
# may lead to deadlocks") would be caused by the tracer's own threads in a
# program that has none of its own. Before every fork, an "ignore" filter for
# exactly that message is put first in the filter list when the only extra
# threads are ours, and taken out otherwise. It stays in place after the fork
# because 3.13 warns after the after-fork hooks have run (3.12 before); only
# os.fork() and os.forkpty() emit that message, and both run this hook first.
_FORK_WARNING: Final = r"This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks"


def _before_fork() -> None:
    runtime = _current
    if runtime is None:
        return
    _flush_multiprocessing_children(runtime)
    ours = runtime.our_threads()
    _hide_fork_warning(bool(ours) and threading.active_count() - ours <= 1)


def _hide_fork_warning(hide: bool) -> None:
    try:
        if hide:
            warnings.filterwarnings("ignore", message=_FORK_WARNING, category=DeprecationWarning)  # moves it first
        else:
            ours = [f for f in warnings.filters if f[1] is not None and getattr(f[1], "pattern", None) == _FORK_WARNING]
            for entry in ours:
                warnings.filters.remove(entry)
            if ours:
                getattr(warnings, "_filters_mutated", lambda: None)()
    except Exception:
        pass


_multiprocessing_hooked: set[int] = set()


def _flush_multiprocessing_children(runtime: Runtime) -> None:
    """Make multiprocessing's fork children flush before they `os._exit()`.

    A `multiprocessing.Process` child never runs atexit handlers; it runs
    multiprocessing's own finalizers, which it clears right after the fork
    and before the after-fork callbacks, so the finalizer is installed from
    one of those. Only when multiprocessing is already in use: never imported
    for it.
    """
    util = sys.modules.get("multiprocessing.util")
    if util is None or id(runtime) in _multiprocessing_hooked:
        return
    _multiprocessing_hooked.add(id(runtime))

    def install_finalizer(runtime: Runtime) -> None:
        util.Finalize(runtime, runtime.stop, exitpriority=-100)

    util.register_after_fork(runtime, install_finalizer)


def _after_fork_in_child() -> None:
    runtime = _current
    if runtime is not None and not runtime._stopped:
        try:
            runtime.after_fork_in_child()
        except Exception:
            pass


atexit.register(_stop_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


