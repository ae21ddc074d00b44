"""Provenance: turn the hooks' raw records into wire events (off the hot path).

The flusher thread calls `Resolver.convert(drained)` with what
`buffers.drain()` returned. The resolver assigns value node ids, summarises
values (`protocol.values.summarize`, the only place user objects are looked
at), and decides which earlier node an input came from.

Exactness (docs/internals.md §3): an input edge names a producer node only
when the value really flowed from it.

- Call mode links by identity, and only objects that cannot be shared with
  an equal literal: not None/bools/small ints/identifier-like or 1-char
  strings/empty immutables, not a constant of the producing function's
  code, and only while one traced call produced that object in the
  episode. Anything else becomes a fresh value node with no producer.
- Op mode needs no identity at all: the rewriter tells the hooks where each
  operand came from, and the records carry "refs" (small lists the resolver
  fills with the node id of the value they stand for).

The resolver keeps every object it linked alive until `release()` (the end
of the episode), so an id can never be reused by another object meanwhile;
`release()` drops all of it and memory returns to its level before.
"""
from __future__ import annotations

import itertools
import linecache
import re
import sys
import traceback
import types
from typing import Any, Optional

from protocol.values import summarize, verbatim_summary
from tracer import hooks, op_hooks

_SMALL_INTS = range(-5, 257)
_NAME_CHARS = re.compile(r"[A-Za-z0-9_]+")
_TRACEBACK_LIMIT = 20000

# The types a code object's constants have (the compiler's; literal
# parameters are str or numbers). Only a result of one of these types can be
# "a constant of the function that returned it", so only those pay for
# looking up the function's current code.
_CONSTANT_TYPES = frozenset({int, float, complex, str, bytes, tuple, frozenset, types.CodeType})


def is_shareable(obj: Any) -> bool:
    """True if CPython may hand out this very object for an equal literal elsewhere.

    Such objects (None, bools, small ints, interned-looking strings, empty
    immutables) say nothing by their identity, so they are never linked.
    """
    kind = type(obj)
    if obj is None or kind is bool or obj is NotImplemented or obj is Ellipsis:
        return True
    if kind is int:
        return obj in _SMALL_INTS
    if kind is str:
        # the compiler interns constants made only of name characters; 1-char strings are cached
        return len(obj) <= 1 or obj.isidentifier() or _NAME_CHARS.fullmatch(obj) is not None
    if kind is bytes:
        return len(obj) <= 1
    if kind is tuple or kind is frozenset:
        return len(obj) == 0
    return False


def _unlinkable(obj: Any) -> bool:
    """True if identity must never link `obj`: it is shareable, or a hook's clipped copy of a long str."""
    kind = type(obj)
    # the commonest kinds first: this runs for every traced input and result
    if kind is float:
        return False
    if kind is int:
        return -5 <= obj <= 256
    if kind is tuple:
        return len(obj) == 0 or op_hooks.is_clipped(obj)
    return is_shareable(obj)


def _summary(obj: Any) -> dict:
    """The wire summary of anything but a verbatim scalar (callers try `verbatim_summary` first:
    most values are scalars, and one call less per value shows in the resolver's throughput)."""
    if type(obj) is tuple and op_hooks.is_clipped(obj):
        # a hook's clipped copy stands for the long str/bytes it was cut from
        _, head, length, type_name = obj
        return {"t": type_name, "id": id(obj), "v": head, "len": length, "trunc": True}
    return summarize(obj)


class _Episode:
    """What one episode knows about values, and the objects it keeps alive for that.

    Invariant: an object's id is a key of `produced`, `sources`,
    `last_result` or `refs` (or in `ambiguous`) only once the object is in
    `alive`, which is emptied only with the whole episode. No other object
    can get that id meanwhile, so finding the id of a live object finds that
    very object: the lookups need no identity check and no (node, object)
    pair per entry (fewer allocations for the cyclic GC to walk).
    """

    __slots__ = ("alive", "produced", "ambiguous", "sources", "last_result", "ops", "param_nodes", "refs")

    def __init__(self) -> None:
        self.alive: list = []
        self.produced: dict[int, int] = {}     # id -> node: the unique traced producer so far
        self.ambiguous: set[int] = set()        # ids produced more than once
        self.sources: dict[int, int] = {}      # id -> node: inputs with no producer, and parameter values
        self.last_result: dict[int, int] = {}  # id -> node: the most recent traced result
        self.ops: dict[int, int] = {}          # op id -> func id (calls seen)
        self.param_nodes: set[int] = set()
        self.refs: dict[int, int] = {}         # op mode: id(ref) -> node


class Resolver:
    """Raw hook records -> wire events, per episode (see the module docstring)."""

    def __init__(self) -> None:
        self._next_node = itertools.count(1).__next__
        self._episode = _Episode()
        self._constants: dict[int, tuple] = {}  # func id -> (its code when cached, ids of that code's constants)
        self._constants_now: dict[Optional[int], frozenset] = {}  # the same, checked during this convert()
        self._summaries: dict[int, dict] = {}  # id -> summary of a non-scalar summarised during this convert()
        self._argnames_cache: dict[int, list] = {}
        self._defaults_cache: dict[int, dict] = {}
        self._defaults_generation: Any = None   # tracer.params generation the defaults cache is for
        # id -> (name, value) of parameters whose current value is an object of
        # their own (tracer.param and --param hand out unshared copies): a
        # value passed in that IS such an object came from the parameter, even
        # when unmarked code read it and equal strings are interned elsewhere.
        self._param_values: dict[int, tuple] = {}
        self._thread = 0
        self.skipped = 0   # events dropped because their call was not seen in this episode
        self.errors = 0    # records that could not be converted

    # -- public API --------------------------------------------------------

    def convert(self, drained) -> list[tuple]:
        """Wire events for `drained`: a list of (thread ident, records) as `buffers.drain()` returns.

        Each event is a tuple laid out as docs/internals.md §3 shows (msgpack
        sends it as the array the daemon receives): tuples of plain data are
        untracked by the cyclic GC once it has seen them, so a batch waiting
        to be encoded never makes the program's garbage collections longer.
        A bare list of records is accepted too. Never raises for a bad
        record: it is skipped and counted in `errors`.
        """
        events: list[tuple] = []
        if drained and isinstance(drained[0], tuple) and len(drained[0]) == 2 and isinstance(drained[0][1], list):
            chunks = drained
        else:
            chunks = [(0, drained)]
        self._check_default_params()
        self._constants_now.clear()
        self._summaries.clear()
        handlers = _HANDLERS
        for thread, records in chunks:
            self._thread = thread
            for record in records:
                try:
                    # one dict lookup instead of a chain of tag comparisons; an
                    # unknown tag (KeyError) or a malformed record is counted
                    handlers[record[0]](self, record, events)
                except Exception:
                    self.errors += 1
        self._summaries.clear()  # holds summaries, not objects; free them now
        return events

    def node_for_value(self, obj: Any) -> Optional[int]:
        """The node of the most recent traced result that IS `obj` in this episode, or None."""
        return self._episode.last_result.get(id(obj))  # exact by the _Episode invariant

    def node_for_exception(self, exc: BaseException) -> Optional[int]:
        """The node of an exception that left a marked call in this episode (the outermost such call), or None."""
        return self.node_for_value(exc)

    def release(self, episode: Any = None) -> None:
        """Forget every value of the current episode (memory returns to its level before)."""
        self._episode = _Episode()

    # -- nodes ------------------------------------------------------------

    def _value_node(self, obj: Any, events: list) -> int:
        node = self._next_node()
        events.append(("v", node, verbatim_summary(obj) or self._other_summary(obj)))
        return node

    def _other_summary(self, obj: Any) -> dict:
        """The summary of a value that is not a verbatim scalar, taken once per convert().

        An object often shows up twice in one batch (a call's argument it
        returns, a method returning self): its second summary would be the
        same, since both are taken now, not when the records were made. The
        records of the batch keep the object alive, so its id is its own
        meanwhile.
        """
        key = id(obj)
        summary = self._summaries.get(key)
        if summary is None:
            summary = self._summaries[key] = _summary(obj)
        return summary

    def _input_node(self, obj: Any, events: list) -> int:
        """The node an input value came from (call mode: by identity, where exact)."""
        ep = self._episode
        key = id(obj)
        node = ep.sources.get(key)
        if node is not None and node in ep.param_nodes:
            return node  # a parameter's own (unshared) value
        if not _unlinkable(obj):
            produced = ep.produced.get(key)
            if produced is not None:
                return produced
            if key not in ep.ambiguous:
                if node is not None:
                    return node
                param = self._param_values.get(key)
                if param is not None and param[1] is obj:
                    return self._param_node(param[0], obj, events)
                node = self._next_node()  # _value_node(), inlined: this is the commonest input
                events.append(("v", node, verbatim_summary(obj) or self._other_summary(obj)))
                ep.sources[key] = node
                ep.alive.append(obj)
                return node
        param = self._param_values.get(key)
        if param is not None and param[1] is obj:
            return self._param_node(param[0], obj, events)
        return self._value_node(obj, events)

    def _output_node(self, obj: Any, events: list, func_id: Optional[int]) -> int:
        """A fresh node for a value a traced operation produced; linkable when exact."""
        ep = self._episode
        node = self._next_node()  # _value_node(), inlined: every result gets here
        events.append(("v", node, verbatim_summary(obj) or self._other_summary(obj)))
        key = id(obj)
        ep.last_result[key] = node
        ep.alive.append(obj)
        if _unlinkable(obj) or (type(obj) in _CONSTANT_TYPES and id(obj) in self._constant_ids(func_id)):
            return node
        if key in ep.ambiguous:
            return node
        if key in ep.produced:
            # a second producer of the same object: identity no longer says which one
            del ep.produced[key]
            ep.ambiguous.add(key)
            return node
        ep.produced[key] = node
        return node

    def _constant_ids(self, func_id: Optional[int]) -> frozenset:
        """ids of the constants of the marked function's code as it is now (patches swap code).

        Looked up once per function per convert(): finding the function's
        current code costs more than the rest of converting a result.
        """
        ids = self._constants_now.get(func_id)
        if ids is None:
            ids = self._constants_now[func_id] = self._current_constant_ids(func_id)
        return ids

    def _current_constant_ids(self, func_id: Optional[int]) -> frozenset:
        if func_id is None:
            return frozenset()
        from tracer import marking

        entry = marking.registry.get(func_id)
        func = entry.function() if entry is not None else None
        current = func.__code__ if func is not None else None
        cached = self._constants.get(func_id)
        # The code object itself is kept (not its id), so the ids of its
        # constants stay theirs even after a patch swapped it out.
        if cached is None or cached[0] is not current:
            cached = self._constants[func_id] = (current, _constant_ids(func_id))
        return cached[1]

    # -- records ----------------------------------------------------------

    def _call(self, record: tuple, events: list, refs: bool = False) -> None:
        op, func_id, parent, args = record[1], record[2], record[3], record[4]
        ops = self._episode.ops
        ops[op] = func_id
        if parent is not None and parent not in ops:
            parent = None  # the enclosing call belongs to an earlier episode
        names = self._argnames_cache.get(func_id)
        if names is None or len(names) < len(args):
            names = self._argnames_cache[func_id] = _argnames(func_id, len(args))
        defaults = self._defaults_cache.get(func_id)
        if defaults is None:
            defaults = self._defaults_cache[func_id] = _default_params(func_id)
        reads: list = []
        if defaults or refs:
            inputs = self._call_inputs(op, names, args, defaults, refs, events, reads)
        else:  # the common case: call mode, no default-argument parameters
            input_node = self._input_node
            inputs = tuple([(name, input_node(value, events)) for name, value in zip(names, args)])
        events.append(("call", op, func_id, parent, inputs, self._thread, None))
        if reads:
            events.extend(reads)

    def _call_inputs(self, op: int, names: list, args: tuple, defaults: dict, refs: bool,
                     events: list, reads: list) -> tuple:
        """A call's (argument name, node) pairs when an argument may be a default-argument
        parameter (its read goes to `reads`) or comes with its op-mode ref."""
        ep = self._episode
        inputs = []
        for name, value in zip(names, args):  # names is at least as long as args
            ref = None
            if refs:  # op mode: the argument's ref in the callee's shadow
                ref, value = value, value[0]
            param = defaults.get(name) if defaults else None
            if param is not None and _current_value(param) is value:
                node = self._param_node(param.name, value, events)
                reads.append(("read", op, param.name, node))
            elif ref is not None and id(ref) in ep.refs:
                node = ep.refs[id(ref)]  # op mode: the caller's own value node for this argument
            else:
                node = self._input_node(value, events)
            if ref is not None:
                self._set_ref(ref, node)
            inputs.append((name, node))
        return tuple(inputs)

    def _callref(self, record: tuple, events: list) -> None:
        self._call(record, events, True)

    def _ret(self, record: tuple, events: list) -> None:
        op, value = record[1], record[2]
        func_id = self._episode.ops.get(op)
        if func_id is None:
            self.skipped += 1
            return
        events.append(("ret", op, self._output_node(value, events, func_id), None))

    def _retref(self, record: tuple, events: list) -> None:
        op, ref = record[1], record[2]  # op mode: the ref of the returned value
        func_id = self._episode.ops.get(op)
        if func_id is None:
            self.skipped += 1
            return
        node = self._output_node(ref[0], events, func_id)
        self._set_ref(ref, node)
        events.append(("ret", op, node, None))

    def _exc(self, record: tuple, events: list) -> None:
        op, exc, tb = record[1], record[2], record[3]
        func_id = self._episode.ops.get(op)
        if func_id is None:
            self.skipped += 1
            return
        events.append(("exc", op, _type_name(exc), _message(exc),
                       annotated_traceback(exc, tb, func_id), None))
        # Like opto's ExceptionNode: the exception is the value the failed
        # call produced, so feedback can be given on it (node_for_exception).
        node = self._output_node(exc, events, func_id)
        events.append(("ret", op, node, None))

    def _read(self, record: tuple, events: list) -> None:
        _, op, name, value = record
        if op not in self._episode.ops:
            self.skipped += 1
            return
        events.append(("read", op, name, self._param_node(name, value, events)))

    def _readref(self, record: tuple, events: list) -> None:
        _, op, name, ref = record  # op mode: the load site's ref
        if op not in self._episode.ops:
            self.skipped += 1
            return
        node = self._param_node(name, ref[0], events)
        self._set_ref(ref, node)
        events.append(("read", op, name, node))

    def _param_node(self, name: str, value: Any, events: list) -> int:
        ep = self._episode
        key = id(value)
        node = ep.sources.get(key)
        if node is not None and node in ep.param_nodes:
            return node
        node = self._value_node(value, events)
        events.append(("param", node, name))
        ep.param_nodes.add(node)
        # tracer.param hands out unshared copies of str/bytes (2+ items): the
        # parameter's current value is then exactly this object
        unshared = type(value) in (str, bytes) and len(value) >= 2
        if (unshared or not is_shareable(value)) and key not in ep.produced:
            ep.sources[key] = node
            ep.alive.append(value)
        return node

    def _op(self, record: tuple, events: list) -> None:
        _, out, op, site, opname, refs = record
        ep = self._episode
        if op not in ep.ops:
            self.skipped += 1
            return
        inputs = []
        for ref in refs:
            if ref is None:
                continue
            node = ep.refs.get(id(ref))
            if node is None:
                # untracked by the rewriter: a fresh node (identity-linked only where exact)
                node = self._input_node(ref[0], events)
                self._set_ref(ref, node)
            inputs.append(node)
        value = out[0]
        node = self._value_node(value, events)
        self._set_ref(out, node)
        ep.last_result[id(value)] = node
        ep.alive.append(value)
        events.append(("op", hooks._next_op(), op, site, opname, tuple(inputs), node))

    def _check_default_params(self) -> None:
        """Forget the cached default-argument parameters if tracer.params changed since they were found.

        Checked once per convert(), not per call: parameters registered
        while one batch is converted are seen from the next batch on.
        """
        params = sys.modules.get("tracer.params")
        registry = getattr(params, "registry", None) if params is not None else None
        generation = getattr(registry, "generation", None) if registry is not None else None
        if generation != self._defaults_generation or registry is None:
            self._defaults_cache.clear()
            self._defaults_generation = generation
            self._param_values = _own_param_values(registry)

    def _set_ref(self, ref: tuple, node: int) -> None:
        ep = self._episode
        ep.refs[id(ref)] = node
        ep.alive.append(ref)  # its id stays unique for the episode (the _Episode invariant)


# record tag -> Resolver method that converts it
_HANDLERS = {
    "call": Resolver._call,
    "callref": Resolver._callref,
    "ret": Resolver._ret,
    "retref": Resolver._retref,
    "exc": Resolver._exc,
    "read": Resolver._read,
    "readref": Resolver._readref,
    "op": Resolver._op,
}


def _argnames(func_id: int, n: int) -> list[str]:
    from tracer import marking

    entry = marking.registry.get(func_id)
    names = list(entry.argnames) if entry is not None and entry.argnames else []
    if len(names) < n:
        names += [str(i) for i in range(len(names), n)]
    return names[:n]


def _own_param_values(registry: Any) -> dict[int, tuple]:
    """id -> (name, value) for module-global and class-attribute parameters holding an object of their own."""
    if registry is None:
        return {}
    found: dict[int, tuple] = {}
    try:
        records = list(registry.by_name.values())
    except Exception:
        return {}
    for record in records:
        if getattr(record, "kind", None) not in ("global", "class_attr"):
            continue
        value = getattr(record, "value", None)
        # Same rule as _param_node: unshared str/bytes copies, or objects
        # CPython never shares between unrelated code.
        if (type(value) in (str, bytes) and len(value) >= 2) or not is_shareable(value):
            found[id(value)] = (record.name, value)
    return found


def _default_params(func_id: int) -> dict:
    """arg name -> ParamRecord for the marked function's default-argument parameters."""
    params = sys.modules.get("tracer.params")
    registry = getattr(params, "registry", None) if params is not None else None
    if registry is None:
        return {}
    by_default = getattr(registry, "by_default", None)
    if not by_default:
        return {}
    return {arg: rec for (fid, arg), rec in list(by_default.items()) if fid == func_id}


def _current_value(record: Any) -> Any:
    try:
        return record.get()
    except Exception:
        return _NOTHING


_NOTHING = object()


def _constant_ids(func_id: int) -> frozenset:
    """ids of the constants of a marked function's code (and the code nested in it)."""
    from tracer import marking

    entry = marking.registry.get(func_id)
    codes = []
    if entry is not None:
        if entry.code is not None:
            codes.append(entry.code)
        func = entry.function()
        if func is not None:
            codes.append(func.__code__)
    ids: set[int] = set()
    stack = list(codes)
    while stack:
        code = stack.pop()
        for const in code.co_consts:
            ids.add(id(const))
            if isinstance(const, types.CodeType):
                stack.append(const)
            elif type(const) in (tuple, frozenset):
                ids.update(id(c) for c in const)
    return frozenset(ids)


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as error:
        return f"<str() failed: {type(error).__name__}>"


def annotated_traceback(exc: BaseException, tb: Optional[types.TracebackType], func_id: int) -> str:
    """The traceback of `exc` from the marked frame down, plus the marked source with the failing line marked.

    Like opto's ExecutionError: the reader sees which line of the marked
    function raised, in that function's own source.
    """
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception as error:
        text = f"{_type_name(exc)}: {_message(exc)} (traceback unavailable: {type(error).__name__})\n"
    marked = _marked_source_excerpt(tb, func_id)
    if marked:
        text += "\n" + marked
    return text[:_TRACEBACK_LIMIT]


def _marked_source_excerpt(tb: Optional[types.TracebackType], func_id: int) -> str:
    if tb is None:
        return ""
    from tracer import marking

    entry = marking.registry.get(func_id)
    code = tb.tb_frame.f_code
    lineno = tb.tb_lineno
    filename = code.co_filename
    first = code.co_firstlineno
    lines = linecache.getlines(filename)
    if not lines:
        return ""
    try:
        import inspect
        block = inspect.getblock(lines[first - 1:])
    except Exception:
        block = lines[first - 1:lineno]
    name = f"{entry.module}:{entry.qualname}" if entry is not None else code.co_name
    out = [f"In marked function {name} ({filename}, line {lineno}):"]
    for offset, line in enumerate(block):
        number = first + offset
        marker = "-->" if number == lineno else "   "
        out.append(f"{marker} {number:4d} | {line.rstrip()}")
    return "\n".join(out) + "\n"
