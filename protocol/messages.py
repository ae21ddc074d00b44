"""Every message kind of the protocol, as dataclasses (docs/internals.md §1).

A message travels as a msgpack map: ``{"kind": KIND, field: value, ...}``.
The annotations below are the schema: `protocol.schema` turns them into the
checks `to_wire` and `from_wire` apply, so a wrong field is reported by name
("feedback.text: expected str, got int") on either side.

Forward compatibility: a map with an unknown kind decodes to
`Unknown(kind, fields)` and unknown keys inside a known kind are ignored, so a
peer with a newer minor version can add both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

from .constants import PROTOCOL_VERSION
from .errors import InvalidMessage, UnencodableValue, VersionMismatch
from .schema import codec_for, spec_of, type_label

ParamKind = Literal["global", "class_attr", "instance_attr", "default", "literal", "source", "value"]
PatchKind = Literal["value", "source"]

# --- nested records ------------------------------------------------------


@dataclass
class FunctionDef:
    """A marked function, as the optimizer sees it."""

    id: int
    module: str
    qualname: str
    source: str
    doc: str | None
    signature: str
    file: str
    line: int
    trainable: bool
    freevars: list[str] = field(default_factory=list)


@dataclass
class ParamDef:
    """A parameter and where it is stored. `value` is plain data (for `source` params, the source text)."""

    name: str
    type: str
    value: object
    constraint: str | None = None
    kind: ParamKind = "value"
    where: str = ""
    trainable: bool = True


@dataclass
class SiteDef:
    """One traced operation site in op mode; `text` is the source segment."""

    id: int
    func: int
    op: str
    line: int
    col: int
    text: str


@dataclass
class PatchItem:
    """One parameter's new value (`kind="value"`) or one function's new source (`kind="source"`)."""

    name: str
    kind: PatchKind
    value: object = None
    source: str | None = None


@dataclass
class PatchResult:
    """Whether one PatchItem applied in a process, and why not."""

    name: str
    ok: bool
    error: str | None = None


# --- messages ------------------------------------------------------------

MESSAGE_CLASSES: dict[str, type] = {}
"""kind -> message class, for every kind this side knows."""


def _message(kind: str):
    def register(cls):
        cls = dataclass(cls)
        cls.KIND = kind
        MESSAGE_CLASSES[kind] = cls
        return cls
    return register


@_message("hello")
class Hello:
    """Client -> daemon, first frame. See `protocol.handshake.client_hello` to build one."""

    KIND: ClassVar[str]
    protocol: tuple[int, int]
    python: str
    pid: int
    argv: list[str]
    session: str
    auth_token: str | None = None
    granularity: str = "call"
    client_name: str = ""


@_message("welcome")
class Welcome:
    """Daemon -> client: the hello was accepted. `version` is the latest accepted parameter version (0: none)."""

    KIND: ClassVar[str]
    protocol: tuple[int, int]
    daemon_pid: int
    client_id: int
    session: str
    version: int


@_message("reject")
class Reject:
    """Daemon -> client: the hello was refused; show `reason` to the user."""

    KIND: ClassVar[str]
    reason: str
    protocol: tuple[int, int]


@_message("definitions")
class Definitions:
    """Client -> daemon: marked functions, parameters and op sites, each sent once."""

    KIND: ClassVar[str]
    functions: list[FunctionDef] = field(default_factory=list)
    params: list[ParamDef] = field(default_factory=list)
    sites: list[SiteDef] = field(default_factory=list)


@_message("events")
class EventBatch:
    """Client -> daemon: trace events of one episode (layouts in `protocol.events`)."""

    KIND: ClassVar[str]
    episode: int
    events: list[list]
    dropped: int = 0


@_message("episode_closed")
class EpisodeClosed:
    KIND: ClassVar[str]
    episode: int


@_message("feedback")
class Feedback:
    """Client -> daemon: feedback on value node `node` of `episode`."""

    KIND: ClassVar[str]
    episode: int
    node: int
    text: str
    score: float | None = None


@_message("step")
class StepRequest:
    KIND: ClassVar[str]
    request_id: int
    options: dict = field(default_factory=dict)


@_message("step_done")
class StepDone:
    """Daemon -> client: the step finished; `version` is None when it produced no patch."""

    KIND: ClassVar[str]
    request_id: int
    version: int | None
    changes: list[dict] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None


@_message("patch")
class Patch:
    KIND: ClassVar[str]
    version: int
    items: list[PatchItem]
    request_id: int | None = None
    reason: str = ""


@_message("patch_ack")
class PatchAck:
    KIND: ClassVar[str]
    version: int
    results: list[PatchResult]


@_message("error")
class Error:
    KIND: ClassVar[str]
    code: str
    message: str
    request_id: int | None = None


@_message("status")
class StatusQuery:
    KIND: ClassVar[str]
    request_id: int


@_message("status_reply")
class StatusReply:
    KIND: ClassVar[str]
    request_id: int
    status: dict


@_message("request")
class Request:
    """Admin command (export, rollback, graph, stop, parameters)."""

    KIND: ClassVar[str]
    request_id: int
    command: str
    args: dict = field(default_factory=dict)


@_message("reply")
class Reply:
    KIND: ClassVar[str]
    request_id: int
    ok: bool
    data: object = None
    error: str | None = None


@dataclass
class Unknown:
    """A message of a kind this side does not know (sent by a newer minor version). Ignore it."""

    kind: str
    fields: dict = field(default_factory=dict)


Message = Union[
    Hello, Welcome, Reject, Definitions, EventBatch, EpisodeClosed, Feedback, StepRequest,
    StepDone, Patch, PatchAck, Error, StatusQuery, StatusReply, Request, Reply, Unknown,
]

_UNKNOWN_FIELDS = codec_for(dict)   # an unknown kind's fields are still checked as plain data
_HANDSHAKE_KINDS = frozenset({"hello", "welcome", "reject"})


def to_wire(message: Any) -> dict:
    """The map to pack for `message`; raises UnencodableValue naming the bad field."""
    if isinstance(message, Unknown):
        if not isinstance(message.kind, str) or message.kind in MESSAGE_CLASSES:
            raise UnencodableValue("unknown.kind", f"expected the name of a kind this side does not know, "
                                   f"got {message.kind!r}")
        fields = _UNKNOWN_FIELDS.encode(message.fields, f"{message.kind}.fields")
        if "kind" in fields:
            raise UnencodableValue(f"{message.kind}.fields", "must not contain a 'kind' key")
        return {"kind": message.kind, **fields}
    kind = getattr(type(message), "KIND", None)
    if MESSAGE_CLASSES.get(kind) is not type(message):
        raise UnencodableValue("message", f"expected a protocol.messages class, got {type_label(message)}")
    wire = spec_of(type(message)).encode(message, kind)
    wire["kind"] = kind
    return wire


def from_wire(data: Any) -> Message:
    """The message a received map stands for; raises InvalidMessage naming the bad field.

    A handshake message whose fields do not fit but whose `protocol` shows a
    different major version raises VersionMismatch instead: the peer is not
    broken, it speaks another version.
    """
    if type(data) is not dict:
        raise InvalidMessage("message", f"expected a map with a 'kind' key, got {type_label(data)}")
    kind = data.get("kind")
    if type(kind) is not str:
        if "kind" not in data:
            raise InvalidMessage("message.kind", "missing required field")
        raise InvalidMessage("message.kind", f"expected str, got {type_label(kind)}")
    cls = MESSAGE_CLASSES.get(kind)
    if cls is None:
        fields = {key: value for key, value in data.items() if key != "kind"}
        return Unknown(kind, _UNKNOWN_FIELDS.decode(fields, kind))
    try:
        return spec_of(cls).decode(data, kind)
    except InvalidMessage:
        if kind in _HANDSHAKE_KINDS:
            _raise_if_other_major(kind, data.get("protocol"))
        raise


def _raise_if_other_major(kind: str, version: Any) -> None:
    if type(version) is list and len(version) == 2 and all(type(x) is int for x in version):
        if version[0] != PROTOCOL_VERSION[0]:
            theirs = (version[0], version[1])
            if kind == "hello":
                raise VersionMismatch(daemon=PROTOCOL_VERSION, tracer=theirs) from None
            raise VersionMismatch(daemon=theirs, tracer=PROTOCOL_VERSION) from None
