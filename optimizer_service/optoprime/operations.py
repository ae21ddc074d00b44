"""Reading an op-mode site's source text: what to call it and where its operands are.

An `op` event carries its inputs by position and the site's source segment
(`x + 1`). To show it in #Code as `add_output = bar_output + add_rhs` we
parse the segment, find its operand sub-expressions in evaluation order (the
order the rewriter reports them in), and replace each by the name of the
value that really flowed there. When the operands cannot be matched to the
inputs (an unusual site, or a segment that does not parse) the line falls
back to a call-like form that still names every input.
"""
from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
from functools import lru_cache

from optimizer_service.optoprime.naming import identifier

_BINOP_NAMES = {
    ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide", ast.FloorDiv: "floordiv",
    ast.Mod: "mod", ast.Pow: "power", ast.MatMult: "matmul", ast.LShift: "lshift", ast.RShift: "rshift",
    ast.BitAnd: "bitand", ast.BitOr: "bitor", ast.BitXor: "bitxor",
}
_BINOP_SYMBOLS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
    ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
}
_CMP_NAMES = {
    ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Is: "is",
    ast.IsNot: "is_not", ast.In: "contains", ast.NotIn: "not_contains",
}
_UNARY_NAMES = {ast.USub: "neg", ast.UAdd: "pos", ast.Not: "not", ast.Invert: "invert"}


@dataclass(frozen=True)
class Operand:
    start: int            # UTF-8 byte offsets into the stripped site text (ast's unit)
    end: int
    role: str             # "lhs", "rhs", "index", "arg0", keyword name, ...
    identifier: str | None  # the operand's own name when it is a plain name / attribute


@dataclass(frozen=True)
class SiteShape:
    base: str                         # name for the operation: "add", "len", "getitem", ...
    operands: tuple[Operand, ...]     # in evaluation order
    operands_with_callee: tuple[Operand, ...] = ()  # for calls: the callee first, then the arguments
    text: str | None = None           # the text the offsets refer to, when not the site's own


@lru_cache(maxsize=65536)
def site_shape(text: str, opname: str = "") -> SiteShape:
    """Analyse one site's source segment (cached: sites repeat in loops)."""
    fallback = SiteShape(base=identifier(opname.lower() or "op", "op"), operands=())
    try:
        expr = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        # An augmented assignment (`total += x`) is a statement, not an expression.
        try:
            body = ast.parse(text.strip(), mode="exec").body
        except (SyntaxError, ValueError):
            return fallback
        if len(body) != 1 or not isinstance(body[0], ast.AugAssign):
            return fallback
        expr = body[0]
    offsets = _line_offsets(text.strip())

    def operand(node: ast.expr, role: str) -> Operand:
        start = offsets[node.lineno - 1] + node.col_offset
        end = offsets[node.end_lineno - 1] + node.end_col_offset  # type: ignore[operator]
        own = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        return Operand(start, end, role, own)

    if isinstance(expr, ast.AugAssign):
        # `total += step` is shown as the value it computes: `total + step`.
        as_expression = (f"{ast.get_source_segment(text.strip(), expr.target)} {_BINOP_SYMBOLS[type(expr.op)]} "
                         f"{ast.get_source_segment(text.strip(), expr.value)}")
        return dataclasses.replace(site_shape(as_expression, opname), text=as_expression)
    if isinstance(expr, ast.BinOp):
        return SiteShape(_BINOP_NAMES.get(type(expr.op), "binop"),
                         (operand(expr.left, "lhs"), operand(expr.right, "rhs")))
    if isinstance(expr, ast.Compare) and len(expr.comparators) == 1:
        return SiteShape(_CMP_NAMES.get(type(expr.ops[0]), "compare"),
                         (operand(expr.left, "lhs"), operand(expr.comparators[0], "rhs")))
    if isinstance(expr, ast.UnaryOp):
        return SiteShape(_UNARY_NAMES.get(type(expr.op), "unary"), (operand(expr.operand, "operand"),))
    if isinstance(expr, ast.Subscript):
        return SiteShape("getitem", (operand(expr.value, "container"), operand(expr.slice, "index")))
    if isinstance(expr, ast.Attribute):
        return SiteShape(identifier(expr.attr, "attribute"), (operand(expr.value, "object"),))
    if isinstance(expr, ast.Call):
        callee = expr.func
        base = callee.id if isinstance(callee, ast.Name) else callee.attr if isinstance(callee, ast.Attribute) \
            else "call"
        args = [operand(a, f"arg{i}") for i, a in enumerate(expr.args)]
        args += [operand(k.value, identifier(k.arg or f"kwargs{i}")) for i, k in enumerate(expr.keywords)]
        # With one input more than the arguments, the first is what was
        # called: for a method, the object it was called on (`prompt` in
        # `prompt.format(...)`), otherwise the function itself.
        head = operand(callee.value, "object") if isinstance(callee, ast.Attribute) else operand(callee, "function")
        return SiteShape(identifier(base, "call"), tuple(args), (head, *args))
    if isinstance(expr, ast.JoinedStr):
        parts = [v.value for v in expr.values if isinstance(v, ast.FormattedValue)]
        return SiteShape("fstring", tuple(operand(p, f"part{i}") for i, p in enumerate(parts)))
    if isinstance(expr, ast.BoolOp):
        return SiteShape("and" if isinstance(expr.op, ast.And) else "or",
                         tuple(operand(v, f"value{i}") for i, v in enumerate(expr.values)))
    return fallback


def operands_for(shape: SiteShape, input_count: int) -> tuple[Operand, ...] | None:
    """The operands matching `input_count` inputs, or None when they cannot be matched."""
    if len(shape.operands) == input_count and input_count:
        return shape.operands
    if shape.operands_with_callee and len(shape.operands_with_callee) == input_count:
        return shape.operands_with_callee
    return None


def substitute(text: str, operands: tuple[Operand, ...], names: list[str]) -> str:
    """`text` with each operand's span replaced by the matching name."""
    data = text.strip().encode("utf-8")
    pieces: list[bytes] = []
    position = 0
    for op, name in sorted(zip(operands, names), key=lambda pair: pair[0].start):
        if op.start < position:  # overlapping spans (should not happen): keep the text as is
            return text.strip()
        pieces.append(data[position:op.start])
        pieces.append(name.encode("utf-8"))
        position = op.end
    pieces.append(data[position:])
    return b"".join(pieces).decode("utf-8", errors="replace")


def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    for line in text.encode("utf-8").splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets
