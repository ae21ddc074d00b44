"""The rule new function source must pass, shared by the optimizer and the patcher.

The optimizer checks a suggested function body before it sends a patch; the
patcher in the user's process checks it again before it compiles. Both call
`check_function_source`, so a suggestion is rejected for the same reason on
either side, and the reason (fed back to the LLM) says what to fix.

A new source is accepted when it

- parses, and contains nothing but one (optionally decorated) `def` or
  `async def` at top level: no imports or other statements, because they
  would not run (only the function's code object is swapped in);
- defines a function with the same name as the parameter's function;
- keeps the signature: same parameter names, kinds and order, and a default
  where there was one. Annotations are ignored. Default *values* are kept
  from the live function (the swap replaces code, not defaults), so a changed
  literal default is rejected rather than silently ignored;
- uses exactly the free variables of the original closure, because CPython
  only accepts a new `__code__` with the same closure cells.

Pure stdlib (`ast`, `inspect`): importable by both sides, imports neither.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterable
from types import CodeType
from typing import Any

__all__ = [
    "SourceRejected",
    "check_function_source",
    "signature_of",
    "parse_function_source",
    "scoped_module",
    "find_nested_code",
    "UNKNOWN_DEFAULT",
]

#: How `signature_of` renders a default whose value has no source form
#: (e.g. `object()`); it matches any default when signatures are compared.
UNKNOWN_DEFAULT = "..."

# Name of the synthetic function that gives closure variables a home when new
# source is compiled out of its original nesting (never executed).
_SCOPE_FUNCTION = "_trace_live_scope_"
_SCOPE_CLASS = "_trace_live_class_"


class SourceRejected(ValueError):
    """New function source breaks the rule; `reason` says what is wrong."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_function_source(source: str, *, name: str | None = None) -> ast.FunctionDef | ast.AsyncFunctionDef:
    """Parse `source` and return its one top-level function definition.

    The source is dedented first (methods arrive indented). Line numbers in the
    returned node are those of the dedented text. Raises `SourceRejected` if it
    does not parse, holds anything besides one function definition, or (when
    `name` is given) defines a function of another name.
    """
    if not isinstance(source, str):
        raise SourceRejected(f"source must be a str, got {type(source).__name__}")
    text = textwrap.dedent(source)
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as exc:
        raise SourceRejected(f"does not parse: line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. source with NUL bytes
        raise SourceRejected(f"does not parse: {exc}") from None
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    others = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    wanted = f"'{name}'" if name else "the function"
    if not functions:
        raise SourceRejected(f"does not define a function: expected one 'def' of {wanted}")
    if len(functions) > 1:
        names = ", ".join(repr(f.name) for f in functions)
        raise SourceRejected(f"defines {len(functions)} functions ({names}); expected only {wanted}")
    if others:
        found = ", ".join(f"{type(n).__name__} at line {n.lineno}" for n in others)
        raise SourceRejected(
            f"must contain only the definition of {wanted}, found also: {found} "
            "(statements outside the function would never run; move them inside it)"
        )
    func = functions[0]
    if name is not None and func.name != name:
        raise SourceRejected(f"defines '{func.name}' but the parameter is function '{name}'")
    return func


def check_function_source(source: str, *, name: str, signature: str, freevars: Iterable[str]) -> None:
    """Raise `SourceRejected` unless `source` may replace function `name`.

    `signature` is the original's parameter list as `signature_of` renders it,
    e.g. ``"(x, y=2, *, z)"``, or "" when it is not known (then only the
    other rules apply); `freevars` are the names of its closure cells
    (`func.__code__.co_freevars`). Returns None when the source is acceptable.
    A `signature` that is not a parameter list raises plain `ValueError`
    (the caller's mistake, not the source's).
    """
    func = parse_function_source(source, name=name)
    if signature.strip():  # "" means not known (no FunctionDef yet): the patcher checks it again
        original_args = _parse_signature(signature)
        if not _same_signature(original_args, func.args):
            raise SourceRejected(
                f"signature changed from {_render(original_args)} to {_render(func.args)}"
            )
    wanted = sorted(set(freevars))
    used = sorted(_free_variables(func, wanted))
    if used != wanted:
        raise SourceRejected(f"uses free variables {used} but the original closure has {wanted}")


def signature_of(source_or_func: Any) -> str:
    """The parameter list of a function as source text, e.g. ``"(x, y=2, *args)"``.

    Accepts function source (one top-level def), or a function object (its
    source when available, else `inspect.signature`, rendering defaults that
    have no literal form as ``...``). Annotations are left out.
    """
    if isinstance(source_or_func, str):
        return _render(parse_function_source(source_or_func).args)
    func = inspect.unwrap(getattr(source_or_func, "__func__", source_or_func))
    try:
        node = parse_function_source(inspect.getsource(func), name=func.__name__)
        return _render(node.args)
    except (OSError, TypeError, SourceRejected):
        pass  # no source (REPL, exec) or a lambda: rebuild it from the live object
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot read the signature of {func!r}: {exc}") from None
    params = []
    for p in sig.parameters.values():
        if p.default is inspect.Parameter.empty:
            params.append(p.replace(annotation=inspect.Parameter.empty))
        else:
            params.append(p.replace(annotation=inspect.Parameter.empty, default=_LiteralOrUnknown(p.default)))
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


class _LiteralOrUnknown:
    """Renders a default as its repr when that is a literal, else as `...`."""

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        try:
            text = repr(self.value)
            ast.literal_eval(text)
            return text
        except Exception:
            return UNKNOWN_DEFAULT


def scoped_module(func: ast.FunctionDef | ast.AsyncFunctionDef, *, qualname: str, freevars: Iterable[str]) -> ast.Module:
    """A module AST that nests `func` as `qualname` says, ready to `compile`.

    ``a.<locals>.C.m`` becomes ``def a(): class C: def m``. Closure variables
    are bound in the innermost enclosing function so they compile as free
    variables (a synthetic enclosing function is added when the qualname has
    none); ``__class__`` comes from the enclosing class. Class wrappers keep
    private-name mangling and zero-argument `super()` exact. Decorators are
    dropped: only the code object is wanted, and nothing is executed.
    """
    func = _copy_without_decorators(func)
    parts = qualname.split(".")
    scopes: list[tuple[str, str]] = []  # (kind, name) from outermost to innermost
    i = 0
    while i < len(parts) - 1:
        if i + 1 < len(parts) and parts[i + 1] == "<locals>":
            scopes.append(("def", parts[i]))
            i += 2
        else:
            scopes.append(("class", parts[i]))
            i += 1
    cells = [v for v in freevars if v != "__class__"]
    if "__class__" in freevars and not any(kind == "class" for kind, _ in scopes):
        scopes.append(("class", _SCOPE_CLASS))
    if cells and not any(kind == "def" for kind, _ in scopes):
        scopes.insert(0, ("def", _SCOPE_FUNCTION))
    innermost_def = max((k for k, (kind, _) in enumerate(scopes) if kind == "def"), default=None)
    body: list[ast.stmt] = [func]
    for index in range(len(scopes) - 1, -1, -1):
        kind, scope_name = scopes[index]
        if kind == "def":
            bindings = [
                ast.Assign(targets=[ast.Name(id=v, ctx=ast.Store())], value=ast.Constant(None))
                for v in cells
            ] if index == innermost_def else []
            node: ast.stmt = ast.FunctionDef(
                name=scope_name, args=_no_args(), body=bindings + body, decorator_list=[], returns=None,
                type_comment=None, **_type_params(),
            )
        else:
            node = ast.ClassDef(name=scope_name, bases=[], keywords=[], body=body, decorator_list=[], **_type_params())
        body = [node]
    module = ast.Module(body=body, type_ignores=[])
    _locate_wrappers(module)
    return module


def find_nested_code(code: CodeType, qualname: str) -> CodeType:
    """The code object of `qualname` inside module code `code` (walks co_consts).

    Raises LookupError if it is not there.
    """
    current = code
    for part in (p for p in qualname.split(".") if p != "<locals>"):
        for const in current.co_consts:
            if isinstance(const, CodeType) and const.co_name == part:
                current = const
                break
        else:
            raise LookupError(f"no code object named {part!r} on the path {qualname!r}")
    return current


# -- helpers -----------------------------------------------------------------


def _parse_signature(signature: str) -> ast.arguments:
    text = signature.strip()
    if "->" in text:  # a return annotation is not part of what we compare
        text = text[: text.rindex("->")].strip()
    if not (text.startswith("(") and text.endswith(")")):
        raise ValueError(f"signature {signature!r} is not a parameter list like '(x, y=2)'")
    try:
        tree = ast.parse(f"def _f{text}: pass")
    except SyntaxError as exc:
        raise ValueError(f"signature {signature!r} is not a parameter list: {exc.msg}") from None
    return tree.body[0].args  # type: ignore[attr-defined]


def _shape(args: ast.arguments) -> list[tuple[str, str, str | None]]:
    """(kind, name, default source or None) for every parameter, in order."""
    positional = args.posonlyargs + args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    shape = []
    for index, arg in enumerate(positional):
        kind = "posonly" if index < len(args.posonlyargs) else "positional"
        default = defaults[index]
        shape.append((kind, arg.arg, None if default is None else ast.unparse(default)))
    if args.vararg:
        shape.append(("*", args.vararg.arg, None))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        shape.append(("kwonly", arg.arg, None if default is None else ast.unparse(default)))
    if args.kwarg:
        shape.append(("**", args.kwarg.arg, None))
    return shape


def _same_default(original: str | None, new: str | None) -> bool:
    if (original is None) != (new is None):
        return False
    if original is None or original == new or original == UNKNOWN_DEFAULT:
        return True
    try:
        return ast.literal_eval(original) == ast.literal_eval(new)  # type: ignore[arg-type]
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        # A default expression (a name, a call) is evaluated when the def
        # runs, which a patch never does: its text cannot be compared with
        # the value the original signature shows, and it is not used anyway.
        return True


def _same_signature(original: ast.arguments, new: ast.arguments) -> bool:
    a, b = _shape(original), _shape(new)
    if len(a) != len(b):
        return False
    return all(
        ka == kb and na == nb and _same_default(da, db)
        for (ka, na, da), (kb, nb, db) in zip(a, b)
    )


def _render(args: ast.arguments) -> str:
    bare = ast.arguments(
        posonlyargs=[ast.arg(arg=a.arg) for a in args.posonlyargs],
        args=[ast.arg(arg=a.arg) for a in args.args],
        vararg=ast.arg(arg=args.vararg.arg) if args.vararg else None,
        kwonlyargs=[ast.arg(arg=a.arg) for a in args.kwonlyargs],
        kw_defaults=list(args.kw_defaults),
        kwarg=ast.arg(arg=args.kwarg.arg) if args.kwarg else None,
        defaults=list(args.defaults),
    )
    return f"({ast.unparse(bare)})"


def _free_variables(func: ast.FunctionDef | ast.AsyncFunctionDef, candidates: list[str]) -> tuple[str, ...]:
    """Which of `candidates` the function would capture from an enclosing scope."""
    module = scoped_module(func, qualname=func.name, freevars=candidates)
    try:
        code = compile(module, "<trace-live source check>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise SourceRejected(f"does not compile: line {exc.lineno}: {exc.msg}") from None
    qualname = _wrapped_qualname(module, func.name)
    found = find_nested_code(code, qualname).co_freevars
    if "__class__" not in found and _needs_class_cell(func):
        # Outside a class body `super()` compiles without the cell and fails
        # only when called; in its class it would need the cell the original lacks.
        found = (*found, "__class__")
    return found


def _needs_class_cell(func: ast.AST) -> bool:
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and node.id == "__class__":
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super" and not node.args:
            return True
    return False


def _wrapped_qualname(module: ast.Module, name: str) -> str:
    parts = []
    node: ast.stmt = module.body[0]
    while isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name != name:
        parts.append(node.name)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append("<locals>")
        node = node.body[-1]
    return ".".join(parts + [name])


def _copy_without_decorators(func: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.FunctionDef | ast.AsyncFunctionDef:
    clone = type(func)(**{field: getattr(func, field, None) for field in func._fields})
    for attr in ("lineno", "col_offset", "end_lineno", "end_col_offset"):
        setattr(clone, attr, getattr(func, attr, None))
    clone.decorator_list = []
    return clone


def _no_args() -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])


def _type_params() -> dict[str, list]:
    # 3.12 added `type_params` to FunctionDef/ClassDef; older versions reject it.
    return {"type_params": []} if "type_params" in ast.FunctionDef._fields else {}


def _locate_wrappers(module: ast.Module) -> None:
    """Give the synthetic nodes positions (the function keeps its own).

    So tracebacks and `linecache` line numbers are those of the source text.
    """
    ast.fix_missing_locations(module)
