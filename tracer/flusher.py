"""The background threads that move trace records from the program to the daemon.

Every `interval` seconds, and whenever someone calls `flush()`, the flusher
thread

1. drains the per-thread buffers the hooks appended to (`drain()`) into its
   backlog,
2. takes the backlog a slice (`slice_records`) at a time and turns the raw
   records into wire events (`convert(records)`, the provenance resolver: this
   is where values are summarised, off the hot path),
3. queues the definitions those events need that the daemon has not been told
   yet (functions, sites, parameters), then the events as `EventBatch`es,
   encoded right away, so each slice's events are freed young (see
   DEFAULT_SLICE_RECORDS),

and a second thread, the sender, sends the queue in order through the
transport. Two threads so that a daemon that reads slowly only ever blocks
the sender: the flusher keeps emptying the program's buffers meanwhile.

Memory is bounded at every stage: the hooks' buffers by their own capacity
(when full they call the overflow handler, `backpressure()`, which moves
them into the backlog on the producing thread), the backlog by
`max_backlog_records` (beyond it the producer waits until the flusher has
converted enough, so a program that records faster than records are
converted is slowed to the flusher's pace, and drops a buffer only after its
timeout), and the flusher's queue,
which holds frames already encoded, by `max_pending_bytes` (while the daemon
is unreachable or slower than the program). Whatever is dropped is counted, reported to the daemon in the next
`EventBatch.dropped`, and shown by `stats()`.

When the transport reconnects to a (restarted) daemon, the new daemon knows
nothing of this process: the flusher re-sends every definition before the
next batch and starts a new episode, because value nodes the old daemon saw
cannot be referred to any more.

The resolver is only touched under `resolver_lock`, so the API layer can look
values up in it (`with flusher.resolver_lock:`) between two slices.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Final, Iterable, Protocol

from protocol import messages as m
from protocol.errors import ProtocolError
from protocol.framing import encode_message

from tracer.errors import NotConnected
from tracer.transport import ConnectionChanged, Transport

DEFAULT_INTERVAL: Final = 0.05
DEFAULT_BATCH_EVENTS: Final = 4096
DEFAULT_MAX_PENDING_BYTES: Final = 32 * 1024 * 1024
DEFAULT_MAX_EPISODE_RECORDS: Final = 100_000  # records (~ values kept alive) before an episode without feedback is released
DEFAULT_BACKPRESSURE_WAIT: Final = 0.05
# Records converted and encoded at a time. Small enough that the events of a
# slice are freed before the cyclic GC promotes them to an older generation
# (which would make the program's full collections run more often), and that
# a producer waiting in backpressure() is let go within a few milliseconds.
DEFAULT_SLICE_RECORDS: Final = 1024
# Records drained from the buffers but not converted yet, at most, before a
# producer in backpressure() has to wait for the conversion to catch up.
DEFAULT_MAX_BACKLOG_RECORDS: Final = 400_000

# Where a "call" event holds its function id, and an "op" event its site id.
_FUNC_INDEX: Final = 2
_SITE_INDEX: Final = 3


@dataclass
class _Frame:
    """One encoded message in the send queue."""

    seq: int
    kind: type
    data: bytes
    events: int = 0
    episode: int | None = None


class DefinitionLookup(Protocol):
    """Where the flusher finds the definitions an event refers to."""

    def function_def(self, func_id: int) -> m.FunctionDef | None: ...

    def site_def(self, site_id: int) -> m.SiteDef | None: ...

    def param_defs(self) -> tuple[int, list[m.ParamDef]]:
        """(generation, definitions): the generation changes whenever a parameter does."""
        ...

    def param_generation(self) -> int:
        """The current generation alone (cheap: checked every flush cycle)."""
        ...

    def trainable_function_ids(self) -> Iterable[int]: ...


class DefinitionTracker:
    """Remembers which definitions were sent, so each goes out once per connection."""

    def __init__(self, lookup: DefinitionLookup):
        self._lookup = lookup
        self._functions: dict[int, m.FunctionDef] = {}
        self._sites: dict[int, m.SiteDef] = {}
        self._params: dict[str, m.ParamDef] = {}
        self._param_generation: int | None = None

    def collect(self, events: list[list]) -> m.Definitions | None:
        """Definitions that `events` (or newly registered parameters and trainable
        functions) need and that were not collected before; None if there are none."""
        functions: list[m.FunctionDef] = []
        sites: list[m.SiteDef] = []
        wanted_functions = set(self._lookup.trainable_function_ids())
        # Set comprehensions, not one loop with branches: this runs over every
        # event sent, and the comprehensions take half the time.
        wanted_functions.update({event[_FUNC_INDEX] for event in events if event[0] == "call"})
        for site_id in {event[_SITE_INDEX] for event in events if event[0] == "op"} - self._sites.keys():
            site = self._lookup.site_def(site_id)
            if site is not None:
                self._sites[site_id] = site
                sites.append(site)
                wanted_functions.add(site.func)
        for func_id in wanted_functions - self._functions.keys():
            definition = self._lookup.function_def(func_id)
            if definition is not None:
                self._functions[func_id] = definition
                functions.append(definition)
        # A newly marked trainable function is also a (source) parameter.
        params = self._changed_params(force=bool(functions))
        if not (functions or sites or params):
            return None
        return m.Definitions(functions=functions, params=params, sites=sites)

    def _changed_params(self, force: bool) -> list[m.ParamDef]:
        if not force and self._lookup.param_generation() == self._param_generation:
            return []
        generation, definitions = self._lookup.param_defs()
        self._param_generation = generation
        changed = [d for d in definitions if self._params.get(d.name) != d]
        self._params.update((d.name, d) for d in changed)
        return changed

    def everything(self) -> m.Definitions | None:
        """Every definition collected so far, for a daemon that has seen none of them."""
        if not (self._functions or self._sites or self._params):
            return None
        return m.Definitions(
            functions=list(self._functions.values()),
            params=list(self._params.values()),
            sites=list(self._sites.values()),
        )

    def forget(self) -> None:
        """Start over (a forked child is a new client that has sent nothing)."""
        self._functions.clear()
        self._sites.clear()
        self._params.clear()
        self._param_generation = None


@dataclass
class FlusherStats:
    """Counters since the process (or the forked child) started tracing."""

    events_sent: int = 0
    batches_sent: int = 0
    definitions_sent: int = 0
    dropped: int = 0            # records/events lost: buffer overflow, queue overflow, conversion errors
    pending_events: int = 0     # converted, not yet sent
    pending_bytes: int = 0      # the same, encoded
    episodes_closed: int = 0
    auto_rolled: int = 0        # episodes released because they grew past max_episode_records
    internal_errors: int = 0
    last_error: str | None = None


class Flusher:
    """Drains and converts trace records on one daemon thread, sends them on another.

    `drain()` returns the raw records appended since the last call, as
    `buffers.drain()` does: a list of (thread ident, records);
    `convert(drained)` turns them into wire events; `release()` frees the
    values the resolver keeps alive for the current episode;
    `take_dropped()` returns how many records the buffers dropped since it
    was last called; `suppress_tracing()` is called first on the flusher's
    own thread so that nothing it runs is traced.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        drain: Callable[[], list[tuple[int, list]]],
        convert: Callable[[list[tuple[int, list]]], list[list]],
        release: Callable[[], None],
        definitions: DefinitionTracker,
        take_dropped: Callable[[], int] = lambda: 0,
        suppress_tracing: Callable[[], None] = lambda: None,
        interval: float = DEFAULT_INTERVAL,
        batch_events: int = DEFAULT_BATCH_EVENTS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_episode_records: int = DEFAULT_MAX_EPISODE_RECORDS,
        slice_records: int = DEFAULT_SLICE_RECORDS,
        max_backlog_records: int = DEFAULT_MAX_BACKLOG_RECORDS,
    ) -> None:
        self._transport = transport
        self._drain = drain
        self._convert = convert
        self._release = release
        self._definitions = definitions
        self._take_dropped = take_dropped
        self._suppress_tracing = suppress_tracing
        self._interval = interval
        self._batch_events = batch_events
        self._max_pending_bytes = max_pending_bytes
        self.max_episode_records = max_episode_records
        self._slice_records = slice_records
        self._max_backlog_records = max_backlog_records
        self._init_state()

    def _init_state(self) -> None:
        # Per process: a forked child calls this again.
        self.resolver_lock = threading.RLock()
        self._queue: deque[_Frame] = deque()   # encoded messages, oldest first
        self._queued_seq = 0         # sequence number of the last frame queued
        self._sent_seq = 0           # ... of the last frame taken off the front (sent)
        self._wake = threading.Event()          # flusher thread: drain now
        self._queue_ready = threading.Event()   # sender thread: something was queued
        self._progress = threading.Condition()  # flush cycles finished
        self._sent = threading.Condition()      # messages sent
        self._count_lock = threading.Lock()
        self._requested = 0          # flush tickets handed out
        self._completed = 0          # highest ticket a finished cycle has served
        self._drained = 0            # highest ticket whose cycle has emptied the buffers
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._connection_generation: int | None = None
        self._unreported_drops = 0
        self._episode_records = 0
        self._episode_sent_on: int | None = None   # connection generation that saw this episode
        # Drained, not yet converted: [thread ident, records, index of the first
        # one not converted], oldest first. Its lock also serialises drains: two
        # drains at once could both take the same records.
        self._backlog_lock = threading.Lock()
        self._backlog: deque[list] = deque()
        self._backlog_records = 0
        self._backlog_ticket = 0     # highest flush ticket whose records have been drained
        self.episode = 1
        self.stats = FlusherStats()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the flusher thread (drain and convert) and the sender thread."""
        self._thread = threading.Thread(target=self._run, name="trace-live-flusher", daemon=True)
        self._sender = threading.Thread(target=self._run_sender, name="trace-live-sender", daemon=True)
        self._thread.start()
        self._sender.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def threads(self) -> list[threading.Thread]:
        """The flusher's live threads (for the runtime's fork bookkeeping)."""
        return [t for t in (self._thread, self._sender) if t is not None and t.is_alive()]

    def stop(self, timeout: float) -> bool:
        """Send what is left (waiting at most `timeout` s) and stop the threads.

        Returns True if everything was sent.
        """
        flushed = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        self._queue_ready.set()
        for thread in (self._thread, self._sender):
            if thread is not None and thread is not threading.current_thread():
                thread.join(min(timeout, 0.5))
        return flushed

    def after_fork_in_child(self) -> None:
        """Start over as a new client: empty queue, nothing sent, episode 1, fresh threads."""
        was_running = self._thread is not None and not self._stopping
        self._init_state()
        self._definitions.forget()
        if was_running:
            self.start()

    # -- what callers use --------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Send everything recorded before this call; wait at most `timeout` s.

        Returns True when it was sent, False on timeout or when the daemon is
        unreachable (the records stay queued, within the queue's bound).
        """
        deadline = time.monotonic() + timeout
        if not self.running or not self._run_one_cycle(timeout):
            return False
        target = self._queued_seq
        while True:
            with self._sent:
                sent = self._sent.wait_for(lambda: self._sent_seq >= target or not self._queue,
                                           max(0.0, deadline - time.monotonic()))
            if sent:
                return True
            # Not sent: the daemon is slow, or away. If the transport is
            # reconnecting (a restart, a forked child), wait for it.
            if self._transport.connected or not self._transport.wait_connected(max(0.0, deadline - time.monotonic())):
                return False
            self._queue_ready.set()

    def _run_one_cycle(self, timeout: float, *, until_drained: bool = False) -> bool:
        """Wake the flusher and wait until a cycle that started after this call has
        finished (or, with `until_drained`, has emptied the buffers)."""
        with self._progress:
            self._requested += 1
            ticket = self._requested
            self._wake.set()
            if until_drained:
                return self._progress.wait_for(lambda: self._drained >= ticket, timeout)
            return self._progress.wait_for(lambda: self._completed >= ticket, timeout)

    def backpressure(self, timeout: float = DEFAULT_BACKPRESSURE_WAIT) -> None:
        """Overflow handler for the hooks: empty the buffers into the flusher's backlog.

        Called on the producing thread when its buffer is full. While the
        backlog has room, the buffers are drained right here and the program
        goes on. Otherwise it waits until the flusher has converted enough
        to take them, and `timeout` s at most: a flusher that cannot keep up
        slows the program down by that much per overflow, never hangs it
        (the buffer then drops what it holds, counted). Never raises.
        """
        try:
            if not self.running or self._thread is threading.current_thread():
                return
            if self._backlog_records < self._max_backlog_records:
                # Drain on this thread: moving records to the backlog is cheap, and
                # must not wait for the flusher's turn (a long GC pause on its
                # thread would otherwise cost the program a whole buffer).
                with self._progress:
                    self._requested += 1
                    ticket = self._requested
                self._take_records(ticket)
                self._wake.set()
                return
            self._run_one_cycle(timeout, until_drained=True)
        except Exception:
            pass

    def new_episode(self, timeout: float) -> int:
        """Close the current episode and start the next one; return the new episode number.

        Flushes first (bounded by `timeout`), queues `EpisodeClosed`, and
        releases the values the resolver kept alive, so memory returns to
        its level before the episode.
        """
        self.flush(timeout)
        with self.resolver_lock:
            self._convert_pending_records()
            self._roll_locked()
            episode = self.episode
        self._queue_ready.set()
        return episode

    def note_feedback(self) -> None:
        """Feedback was given: do not auto-roll the episode for the records seen so far."""
        self._episode_records = 0

    # -- the flusher thread: drain and convert ------------------------------

    def _run(self) -> None:
        self._untraced_thread()
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            stopping = self._stopping
            with self._progress:
                serving = self._requested
            try:
                self._cycle(serving)
            except Exception as exc:  # the flusher must survive its own bugs
                self._note_error(exc)
            with self._progress:
                self._completed = max(self._completed, serving)
                self._drained = max(self._drained, serving)
                self._progress.notify_all()
            if stopping:
                return

    def _untraced_thread(self) -> None:
        try:
            self._suppress_tracing()
        except Exception as exc:
            self._note_error(exc)

    def _cycle(self, serving: int) -> None:
        """Drain the buffers, then convert and queue what was drained, one slice at a time.

        The resolver lock is taken per slice, so the API layer's lookups wait
        for one slice at most. Between slices, a pending request to drain (a
        flush, or a producer in backpressure() that found the backlog full) is
        served as soon as the backlog has room: draining is cheap, converting
        is not, and nobody should wait for a whole backlog to be converted.
        """
        with self.resolver_lock:
            self._take_records(serving)
        while True:
            with self.resolver_lock:
                converted = self._convert_slice()
                if converted and self._episode_records > self.max_episode_records:
                    self._roll_locked()
                    self.stats.auto_rolled += 1
                with self._backlog_lock:
                    emptied = None if self._backlog else self._backlog_ticket
                if emptied is not None:
                    self._mark_completed(emptied)
            if not converted:
                break
            self._queue_ready.set()  # the sender sends this slice while the next one is converted
            self._serve_drain_request()
        with self.resolver_lock:
            if self._unreported_drops:
                # Drops counted after the last batch was made: an empty batch reports them.
                self._enqueue(m.EventBatch(episode=self.episode, events=[], dropped=self._take_unreported_drops()))
        if self._queue:
            self._queue_ready.set()

    def _serve_drain_request(self) -> None:
        """Drain the buffers now if a producer asked for it (backpressure) and the backlog has room."""
        with self._progress:
            requested = self._requested
            if requested <= self._drained:
                return
        if self._backlog_records >= self._max_backlog_records:
            return  # the producer waits for the conversion to catch up, or drops after its timeout
        with self.resolver_lock:
            self._take_records(requested)

    def _mark_drained(self, ticket: int) -> None:
        with self._progress:
            self._drained = max(self._drained, ticket)
            self._progress.notify_all()

    def _mark_completed(self, ticket: int) -> None:
        with self._progress:
            self._completed = max(self._completed, ticket)
            self._progress.notify_all()

    def _take_records(self, ticket: int = 0) -> None:
        """Move every buffered record into the backlog (any thread)."""
        with self._backlog_lock:
            drained = self._drain()
            for thread, records in drained:
                if records:
                    self._backlog.append([thread, records, 0])
                    self._backlog_records += len(records)
            self._backlog_ticket = max(self._backlog_ticket, ticket)
        self._mark_drained(ticket)
        self._count_buffer_drops()

    def _convert_pending_records(self) -> None:
        """Drain, convert and queue everything recorded so far (callers hold resolver_lock)."""
        self._take_records()
        while self._convert_slice():
            pass

    def _next_slice(self) -> tuple[list[tuple[int, list]], int]:
        """Up to `slice_records` records off the front of the backlog, as (thread, records) chunks."""
        with self._backlog_lock:
            return self._next_slice_locked()

    def _next_slice_locked(self) -> tuple[list[tuple[int, list]], int]:
        chunks = []
        room = self._slice_records
        while self._backlog and room > 0:
            entry = self._backlog[0]
            thread, records, start = entry
            end = min(len(records), start + room)
            chunks.append((thread, records if start == 0 and end == len(records) else records[start:end]))
            room -= end - start
            if end == len(records):
                self._backlog.popleft()
            else:
                entry[2] = end
        taken = self._slice_records - room
        self._backlog_records -= taken
        return chunks, taken

    def _convert_slice(self) -> int:
        """Convert one slice of the backlog and queue its events; the number of records it held."""
        chunks, records = self._next_slice()
        if not records:
            return 0
        try:
            events = self._convert(chunks)
        except Exception as exc:
            self._note_error(exc)
            self._drop(records)
            return records
        self._episode_records += records
        definitions = self._definitions.collect(events)
        if definitions is not None:
            self._enqueue(definitions)
        for start in range(0, len(events), self._batch_events):
            self._enqueue(m.EventBatch(episode=self.episode, events=events[start:start + self._batch_events],
                                       dropped=self._take_unreported_drops()))
        return records

    def _enqueue(self, msg: Any) -> None:
        """Encode `msg` (in halves if need be) and queue it; callers hold resolver_lock.

        Event batches that would take the queue past `max_pending_bytes` are
        dropped and counted; definitions, episode ends and drop counts are
        small and the daemon needs them, so they always go in.
        """
        for part, data in self._encoded(msg):
            events = _events_in(part)
            if events and self.stats.pending_bytes + len(data) > self._max_pending_bytes:
                self._drop_batch(part)
                continue
            self._queued_seq += 1
            self._queue.append(_Frame(self._queued_seq, type(part), data, events, _episode_of(part)))
            if events:
                with self._count_lock:
                    self.stats.pending_events += events
                    self.stats.pending_bytes += len(data)

    def _encoded(self, msg: Any) -> list[tuple[Any, bytes]]:
        """`msg` as frames: halved until each part encodes (too large a frame, or a value
        msgpack cannot carry); a single item that still fails is dropped and counted."""
        try:
            return [(msg, encode_message(msg))]
        except ProtocolError as exc:
            halves = _halves(msg)
            if halves is not None:
                return [pair for half in halves for pair in self._encoded(half)]
            self._note_error(exc)
            if isinstance(msg, m.EventBatch):
                self._drop_batch(msg)
            return []

    def _drop_batch(self, batch: m.EventBatch) -> None:
        self._drop(len(batch.events))
        with self._count_lock:
            self._unreported_drops += batch.dropped  # the count it carried must still reach the daemon

    def _take_unreported_drops(self) -> int:
        with self._count_lock:
            count, self._unreported_drops = self._unreported_drops, 0
        return count

    def _roll_locked(self) -> None:
        self._enqueue(m.EpisodeClosed(episode=self.episode))
        try:
            self._release()
        except Exception as exc:
            self._note_error(exc)
        self.episode += 1
        self._episode_records = 0
        self._episode_sent_on = None

    # -- the sender thread ---------------------------------------------------

    def _run_sender(self) -> None:
        self._untraced_thread()
        while True:
            self._queue_ready.wait(self._interval)
            self._queue_ready.clear()
            try:
                self._send_queue()
            except Exception as exc:
                self._note_error(exc)
            with self._sent:
                self._sent.notify_all()
            if self._stopping:
                return

    def _send_queue(self) -> None:
        transport = self._transport
        while self._queue and not self._stopping:
            if not transport.connected:
                return
            generation = transport.generation
            try:
                if generation != self._connection_generation:
                    self._start_connection(generation)
                    continue  # the queue has changed
                frame = self._queue[0]
                transport.send_frame(frame.data, generation=generation)
            except ConnectionChanged:
                continue
            except NotConnected:
                return
            self._queue.popleft()
            self._count_sent(frame, generation)
            with self._sent:
                self._sent_seq = max(self._sent_seq, frame.seq)
                self._sent.notify_all()

    def _start_connection(self, generation: int) -> None:
        """Put everything a daemon that has never seen this process needs first in the queue.

        On the first connection nothing was sent yet: the queue already
        holds every definition collected, in order.
        """
        with self.resolver_lock:
            previous, self._connection_generation = self._connection_generation, generation
            if previous is None:
                return
            # Queued Definitions are all part of `everything`: do not send them twice.
            queue = deque(frame for frame in self._queue if frame.kind is not m.Definitions)
            everything = self._definitions.everything()
            if everything is not None:
                frames = [_Frame(self._sent_seq, m.Definitions, data) for _, data in self._encoded(everything)]
                queue.extendleft(reversed(frames))
            self._queue = queue
            if self._episode_sent_on is not None and self._episode_sent_on != generation:
                # The new daemon never saw this episode's value nodes: start a fresh one.
                self._roll_locked()

    def _count_sent(self, frame: _Frame, generation: int) -> None:
        if frame.kind is m.EventBatch:
            self.stats.events_sent += frame.events
            self.stats.batches_sent += 1
            if frame.events:
                with self._count_lock:
                    self.stats.pending_events -= frame.events
                    self.stats.pending_bytes -= len(frame.data)
            if frame.episode == self.episode:
                self._episode_sent_on = generation
        elif frame.kind is m.Definitions:
            self.stats.definitions_sent += 1
        elif frame.kind is m.EpisodeClosed:
            self.stats.episodes_closed += 1

    # -- drops and errors --------------------------------------------------

    def _count_buffer_drops(self) -> None:
        dropped = self._take_dropped()
        if dropped:
            self._drop(dropped)

    def _drop(self, count: int) -> None:
        with self._count_lock:
            self.stats.dropped += count
            self._unreported_drops += count

    def _note_error(self, exc: BaseException) -> None:
        self.stats.internal_errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"


def _halves(msg: Any) -> tuple[Any, Any] | None:
    """`msg` as two smaller messages of the same kind, or None if it holds one item or less."""
    if isinstance(msg, m.EventBatch) and len(msg.events) > 1:
        half = len(msg.events) // 2
        return (m.EventBatch(episode=msg.episode, events=msg.events[:half], dropped=msg.dropped),
                m.EventBatch(episode=msg.episode, events=msg.events[half:], dropped=0))
    if isinstance(msg, m.Definitions):
        items = [("functions", d) for d in msg.functions] + [("params", d) for d in msg.params] + \
                [("sites", d) for d in msg.sites]
        if len(items) > 1:
            half = len(items) // 2
            return tuple(_definitions_of(part) for part in (items[:half], items[half:]))  # type: ignore[return-value]
    return None


def _definitions_of(items: list[tuple[str, Any]]) -> m.Definitions:
    grouped: dict[str, list] = {"functions": [], "params": [], "sites": []}
    for field_name, definition in items:
        grouped[field_name].append(definition)
    return m.Definitions(**grouped)


def _events_in(msg: Any) -> int:
    return len(msg.events) if isinstance(msg, m.EventBatch) else 0


def _episode_of(msg: Any) -> int | None:
    return msg.episode if isinstance(msg, m.EventBatch) else None
