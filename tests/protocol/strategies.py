"""Hypothesis strategies for every message kind, record and event (valid values only)."""
from __future__ import annotations

from hypothesis import strategies as st

from protocol import messages as m

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1

ids = st.integers(min_value=0, max_value=2**62)
ints = st.integers(min_value=INT64_MIN, max_value=UINT64_MAX)
texts = st.text(max_size=40)                       # hypothesis text() never holds lone surrogates
names = st.text(min_size=1, max_size=12)
floats = st.floats(allow_nan=False)                # NaN != NaN would defeat equality checks
versions = st.tuples(st.integers(0, 2**16), st.integers(0, 2**16))

plain_scalars = st.none() | st.booleans() | ints | floats | texts | st.binary(max_size=40)
plain_data = st.recursive(
    plain_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
plain_maps = st.dictionaries(st.text(max_size=8), plain_data, max_size=4)

function_defs = st.builds(
    m.FunctionDef, id=ids, module=names, qualname=names, source=texts, doc=st.none() | texts,
    signature=texts, file=texts, line=st.integers(0, 10**6), trainable=st.booleans(),
    freevars=st.lists(names, max_size=3),
)
param_defs = st.builds(
    m.ParamDef, name=names, type=names, value=plain_data, constraint=st.none() | texts,
    kind=st.sampled_from(["global", "class_attr", "instance_attr", "default", "literal", "source", "value"]),
    where=texts, trainable=st.booleans(),
)
site_defs = st.builds(m.SiteDef, id=ids, func=ids, op=names, line=st.integers(0, 10**6),
                      col=st.integers(0, 500), text=texts)
patch_items = st.builds(m.PatchItem, name=names, kind=st.sampled_from(["value", "source"]),
                        value=plain_data, source=st.none() | texts)
patch_results = st.builds(m.PatchResult, name=names, ok=st.booleans(), error=st.none() | texts)

small_summaries = st.builds(lambda v, i: {"t": type(v).__name__, "id": i, "v": v},
                            st.none() | st.booleans() | ints | floats | texts, ids)
times = st.integers(0, 2**63 - 1)
events = st.one_of(
    st.tuples(st.just("v"), ids, small_summaries),
    st.tuples(st.just("param"), ids, names),
    st.tuples(st.just("call"), ids, ids, st.none() | ids,
              st.lists(st.tuples(names | st.integers(0, 20), ids).map(list), max_size=3), ids, times),
    st.tuples(st.just("read"), ids, names, ids),
    st.tuples(st.just("ret"), ids, ids, times),
    st.tuples(st.just("exc"), ids, names, texts, texts, times),
    st.tuples(st.just("op"), ids, ids, ids, names, st.lists(ids, max_size=3), ids),
).map(list)

MESSAGES = {
    "hello": st.builds(m.Hello, protocol=versions, python=names, pid=st.integers(1, 2**22),
                       argv=st.lists(texts, max_size=4), session=texts, auth_token=st.none() | texts,
                       granularity=st.sampled_from(["call", "op"]), client_name=texts),
    "welcome": st.builds(m.Welcome, protocol=versions, daemon_pid=st.integers(1, 2**22), client_id=ids,
                         session=texts, version=ids),
    "reject": st.builds(m.Reject, reason=texts, protocol=versions),
    "definitions": st.builds(m.Definitions, functions=st.lists(function_defs, max_size=3),
                             params=st.lists(param_defs, max_size=3), sites=st.lists(site_defs, max_size=3)),
    "events": st.builds(m.EventBatch, episode=ids, events=st.lists(events, max_size=20),
                        dropped=st.integers(0, 2**32)),
    "episode_closed": st.builds(m.EpisodeClosed, episode=ids),
    "feedback": st.builds(m.Feedback, episode=ids, node=ids, text=texts, score=st.none() | floats),
    "step": st.builds(m.StepRequest, request_id=ids, options=plain_maps),
    "step_done": st.builds(m.StepDone, request_id=ids, version=st.none() | ids,
                           changes=st.lists(plain_maps, max_size=3), error=st.none() | texts,
                           error_kind=st.none() | names),
    "patch": st.builds(m.Patch, version=ids, items=st.lists(patch_items, max_size=3),
                       request_id=st.none() | ids, reason=texts),
    "patch_ack": st.builds(m.PatchAck, version=ids, results=st.lists(patch_results, max_size=3)),
    "error": st.builds(m.Error, code=names, message=texts, request_id=st.none() | ids),
    "status": st.builds(m.StatusQuery, request_id=ids),
    "status_reply": st.builds(m.StatusReply, request_id=ids, status=plain_maps),
    "request": st.builds(m.Request, request_id=ids, command=names, args=plain_maps),
    "reply": st.builds(m.Reply, request_id=ids, ok=st.booleans(), data=plain_data, error=st.none() | texts),
}

any_message = st.one_of(*MESSAGES.values())
