"""The table instrumented code is linked with: hook global name -> hook function.

Rewritten code reaches every hook through a module global named
`__@trace_<name>` (never a code constant, so instrumented code objects stay
marshallable); `tracer.marking` installs this table into the globals of each
module that holds marked code.
"""
from __future__ import annotations

from typing import Any

from tracer import hooks, op_hooks

HOOK_GLOBALS: dict[str, Any] = {
    "__@trace_enter": hooks.enter,
    "__@trace_gen_enter": hooks.gen_enter,
    "__@trace_gen_leave": hooks.gen_leave,
    "__@trace_fail": hooks.fail,
    "__@trace_suspend": hooks.suspend,
    "__@trace_pause": hooks.pause,
    "__@trace_resume": hooks.resume,
    "__@trace_read": hooks.read,
    "__@trace_read_cell": hooks.read_cell,
    "__@trace_op_enter": op_hooks.op_enter,
    "__@trace_op_gen_enter": op_hooks.op_gen_enter,
    "__@trace_op_leave": op_hooks.op_leave,
    "__@trace_op_nested_enter": op_hooks.op_nested_enter,
    "__@trace_nested_pass": op_hooks.nested_pass,
    "__@trace_nested_fail": op_hooks.nested_fail,
    "__@trace_nested_resume": op_hooks.nested_resume,
    "__@trace_op": op_hooks.op,
    "__@trace_op_1": op_hooks.op1,
    "__@trace_op_2": op_hooks.op2,
    "__@trace_op_attr": op_hooks.op_attr,
    "__@trace_op_result": op_hooks.op_result,
    "__@trace_op_capture": op_hooks.op_capture,
    "__@trace_op_capture_packed": op_hooks.op_capture_packed,
    "__@trace_op_call": op_hooks.op_call,
    "__@trace_op_stored": op_hooks.op_stored,
    "__@trace_op_store": op_hooks.op_store,
    "__@trace_op_global": op_hooks.op_global,
    "__@trace_op_cell": op_hooks.op_cell,
}
