"""Export a session's optimised parameters: as JSON, and as a diff of the source files.

    trace-daemon export SESSION --format json|diff [-o FILE]

calls `export_session(store, session, fmt)`. The diff is a unified diff
(``a/`` and ``b/`` prefixes, paths relative to `base_dir`, by default the
current directory) that ``git apply`` accepts in the project the programs
ran from:

- a new function body replaces the function's lines in its file (the
  original decorators stay, as they stayed in the running process; the new
  text is re-indented to the function's place, so methods work);
- a new value of an assignment ``PROMPT = "..."`` or
  ``PROMPT = tracer.param("...")`` replaces just the literal (the first
  argument of the `param` call), found by `ast` positions, so the rest of the
  line (name=, constraint=, comments) stays. The same holds for class
  attributes, ``self.attr = tracer.param(...)`` in a method, default
  arguments and ``x = tracer.param(...)`` locals.

Nothing is unpickled or executed: files are only parsed.

Input, as plain data (one `ExportParam` per parameter)::

    name    str   parameter name, e.g. "app.PROMPT", "Agent.run.retries", "app.answer"
    kind    str   global | class_attr | instance_attr | default | value | source | literal
    file    str   the source file it is declared in (None: JSON only)
    line    int   line of the declaration; for "source" the function's first
                  line (its first decorator); None: found by `target`
    target  str   NAME, Class.attr, func.arg, func.var, or the function qualname
    old     any   the value (or, for "source", the function source) the run started from
    new     any   the exported value (or new function source)

`ExportParam.from_definition(param_def, new)` builds one from a stored
`ParamDef` (its `where` field, written by `tracer.params`, reads
``"<kind> <module>:<target> @ <file>:<line>"``; for a source parameter it is
``"<module>:<qualname>"`` and the file and line come from the function's
stored FunctionDef). `export_session` reads the store: definitions and
version 0 for `old`, the latest version (or the one asked for) for `new`.

A parameter that cannot go into the diff (no file, the file changed since the
run, a value with no literal form, a file outside `base_dir`) is listed in
the diff's header as a ``#`` comment with the reason (``git apply`` skips
text before the first file) and is still in the JSON.
"""
from __future__ import annotations

import ast
import base64
import difflib
import io
import json
import os
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

__all__ = ["ExportParam", "ExportError", "export_session", "export_parameters", "render_json", "render_diff",
           "parse_where"]

FORMATS = ("json", "diff")


class ExportError(ValueError):
    """The export cannot be made (unknown format, unknown session or version)."""


@dataclass
class ExportParam:
    """One parameter to export (see the module docstring for the fields)."""

    name: str
    kind: str
    file: str | None = None
    line: int | None = None
    target: str | None = None
    old: Any = None
    new: Any = None
    module: str | None = None  # when `file` is unknown: looked up as a path under base_dir (never imported)

    @classmethod
    def from_definition(cls, param_def: dict[str, Any], new: Any, *, old: Any = None,
                        function_def: dict[str, Any] | None = None) -> "ExportParam":
        """From a stored ParamDef (dict): place from its `where`, old value from it unless given.

        A "source" parameter's place comes from its function's FunctionDef
        (dict; `where` is "module:qualname", the FunctionDef's key).
        """
        where = parse_where(param_def.get("where") or "")
        file, line, target = where.get("file"), where.get("line"), where.get("target")
        if function_def is not None:
            file = function_def.get("file") or None
            line = function_def.get("line") or None
            target = function_def.get("qualname") or target
            if file is not None and file.startswith("<"):
                file = line = None  # compiled from a patch, not from a file
        module = (function_def or {}).get("module") or where.get("module")
        return cls(
            name=param_def["name"], kind=param_def.get("kind") or where.get("kind") or "value",
            file=file, line=line, target=target,
            old=param_def.get("value") if old is None else old, new=new, module=module,
        )


def parse_where(where: str) -> dict[str, Any]:
    """``"global app:PROMPT @ /src/app.py:3"`` -> {kind, module, target, file, line}.

    A source parameter's ``"app:Agent.run"`` gives module and target only;
    anything else gives {}.
    """
    head, sep, place = where.rpartition(" @ ")
    if not sep:
        module, colon, target = where.partition(":")
        if colon and module and target and " " not in where:
            return {"kind": None, "module": module, "target": target, "file": None, "line": None}
        return {}
    kind, _, qualified = head.partition(" ")
    module, _, target = qualified.partition(":")
    file, _, line_text = place.rpartition(":")
    line = int(line_text) if line_text.isdigit() and int(line_text) > 0 else None
    if not file or file.startswith("<"):
        file = None
    return {"kind": kind, "module": module or None, "target": target or None, "file": file, "line": line}


def export_session(store: Any, session: str, fmt: str = "json", *, version: int | None = None,
                   base_dir: str | os.PathLike | None = None) -> str:
    """The session's parameters at `version` (default: the latest) as JSON or a diff.

    `store` is the daemon's `optimizer_service.store.Store` (read only).
    Raises `ExportError` for an unknown format or session.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    try:
        store.session(session)
    except Exception as exc:
        raise ExportError(f"no session {session!r} in the state database: {exc}") from None
    chosen = store.latest_version(session) if version is None else version
    try:
        params = store.version(session, chosen).params
    except Exception as exc:
        raise ExportError(str(exc)) from None
    definitions = store.param_definitions(session)
    initial = store.initial_params(session)
    functions = {f"{f.get('module')}:{f.get('qualname')}": f for f in store.functions(session).values()}
    items = []
    for name in sorted(set(definitions) | set(params)):
        definition = definitions.get(name) or {"name": name, "kind": params[name].get("kind", "value")}
        old = initial.get(name, {}).get("value")
        new = params.get(name, {}).get("value", old)
        function_def = functions.get(definition.get("where") or "") if definition.get("kind") == "source" else None
        items.append(ExportParam.from_definition(definition, new, old=old, function_def=function_def))
    return export_parameters(items, fmt, session=session, version=chosen, base_dir=base_dir)


def export_parameters(params: Iterable[ExportParam], fmt: str, *, session: str = "", version: int | None = None,
                      base_dir: str | os.PathLike | None = None) -> str:
    """`render_json` or `render_diff` of plain-data parameters."""
    params = list(params)
    if fmt == "json":
        return render_json(params, session=session, version=version)
    if fmt == "diff":
        return render_diff(params, base_dir=base_dir)
    raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def render_json(params: Iterable[ExportParam], *, session: str = "", version: int | None = None) -> str:
    """{"session", "version", "parameters": {name: {kind, value | source, changed, file, line}}} as JSON.

    bytes values are written as {"base64": "..."}.
    """
    out: dict[str, Any] = {}
    for p in params:
        entry: dict[str, Any] = {"kind": p.kind, "changed": p.new != p.old or type(p.new) is not type(p.old)}
        entry["source" if p.kind == "source" else "value"] = _jsonable(p.new)
        entry.update(file=p.file, line=p.line)
        out[p.name] = entry
    return json.dumps({"session": session, "version": version, "parameters": out}, indent=2, ensure_ascii=False) + "\n"


def render_diff(params: Iterable[ExportParam], *, base_dir: str | os.PathLike | None = None) -> str:
    """A unified diff of every file a changed parameter is declared in (see module docstring)."""
    root = Path(base_dir or os.getcwd()).resolve()
    edits: dict[Path, list[_Edit]] = {}
    skipped: list[str] = []
    sources: dict[Path, str] = {}
    for p in params:
        if p.new == p.old and type(p.new) is type(p.old):
            continue
        try:
            path = _project_file(p, root)
            text = sources.get(path)
            if text is None:
                text = sources[path] = path.read_text(encoding="utf-8")
            edits.setdefault(path, []).append(_edit_for(p, text))
        except _Skip as exc:
            skipped.append(f"# not in the diff: {p.name}: {exc}")
    chunks = []
    for path in sorted(edits):
        original = sources[path]
        changed, dropped = _apply_edits(original, edits[path])
        skipped.extend(dropped)
        rel = path.relative_to(root).as_posix()
        if changed == original:
            # A file that already holds the exported values (the diff was applied
            # before) must not get a header without hunks: git apply rejects that.
            skipped.append(f"# not in the diff: {rel} already holds the exported values")
            continue
        chunks.append(_unified(original, changed, rel))
    header = "\n".join(skipped) + "\n" if skipped else ""
    return header + "".join(chunks)


# -- finding what to replace ------------------------------------------------------


class _Skip(Exception):
    """This parameter cannot be put into the diff; the message says why."""


@dataclass
class _Edit:
    start: tuple[int, int]   # (line, character column), 1-based line
    end: tuple[int, int]
    text: str
    name: str = ""
    whole_lines: bool = False
    extra: dict = field(default_factory=dict)


def _project_file(p: ExportParam, root: Path) -> Path:
    if not p.file:
        found = _module_file(p.module, root)
        if found is None:
            raise _Skip("its file is not known (defined in a REPL, exec, or by a patch)")
        return found
    path = Path(p.file)
    if not path.is_absolute():
        path = root / path
    path = path.resolve()
    if not path.is_file():
        raise _Skip(f"file {p.file} does not exist here")
    try:
        path.relative_to(root)
    except ValueError:
        raise _Skip(f"file {path} is outside {root} (run the export from the project directory)") from None
    return path


def _module_file(module: str | None, root: Path) -> Path | None:
    """`pkg/mod.py` or `pkg/mod/__init__.py` under `root` for module `pkg.mod` (a path lookup, no import)."""
    if not module or module == "__main__" or not all(part.isidentifier() for part in module.split(".")):
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _edit_for(p: ExportParam, text: str) -> _Edit:
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise _Skip(f"{p.file} does not parse any more (line {exc.lineno}: {exc.msg})") from None
    if p.kind == "source":
        return _function_edit(p, tree, text)
    if p.kind == "literal":
        raise _Skip("literals inside a function are exported with the function's source")
    node = _param_argument(_value_node(p, tree))
    lines = text.splitlines(keepends=True)
    literal = _literal(p.new, p.name, ast.get_source_segment(text, node) or "")
    return _Edit(_position(lines, node.lineno, node.col_offset), _position(lines, node.end_lineno, node.end_col_offset),
                 literal, p.name)


def _literal(value: Any, name: str, replaced: str = "") -> str:
    """Python source for `value`; a str keeps the double quotes of the literal it replaces."""
    text = repr(value)
    try:
        if ast.literal_eval(text) != value and value == value:
            raise ValueError
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise _Skip(f"its value {text[:60]} has no Python literal form") from None
    if isinstance(value, str) and text.startswith("'") and replaced.startswith('"'):
        double = '"' + text[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'
        try:
            if ast.literal_eval(double) == value:
                return double
        except (ValueError, SyntaxError):
            pass
    return text


def _position(lines: list[str], line: int, byte_col: int) -> tuple[int, int]:
    """ast columns are UTF-8 byte offsets; turn one into a character column."""
    source_line = lines[line - 1] if 0 < line <= len(lines) else ""
    return line, len(source_line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def _is_param_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "param") or (isinstance(func, ast.Attribute) and func.attr == "param")


def _param_argument(node: ast.expr) -> ast.expr:
    """The literal to replace: the value argument of a `param(...)` call, else the node itself."""
    if _is_param_call(node):
        if node.args:  # type: ignore[attr-defined]
            return node.args[0]  # type: ignore[attr-defined]
        for keyword in node.keywords:  # type: ignore[attr-defined]
            if keyword.arg == "value":
                return keyword.value
        raise _Skip("its param() call has no value argument")
    return node


def _value_node(p: ExportParam, tree: ast.Module) -> ast.expr:
    target = p.target or p.name.rpartition(".")[2]
    if p.kind == "global":
        name = target.rpartition(".")[2]
        return _assigned_value(tree.body, lambda t: isinstance(t, ast.Name) and t.id == name, p.line, f"global {name}")
    if p.kind == "class_attr":
        owner, _, attr = target.rpartition(".")
        scope = _scope(tree, owner)
        found = _assigned_value(scope.body, lambda t: isinstance(t, ast.Name) and t.id == attr, p.line, None)
        if found is None:  # declared from outside the body: `Cls.attr = param(...)`
            return _assigned_value(list(ast.walk(tree)), _attribute_named(attr), p.line, f"class attribute {target}")
        return found
    if p.kind == "instance_attr":
        owner, _, attr = target.rpartition(".")
        scope = _scope(tree, owner, required=False) or tree
        return _assigned_value(list(ast.walk(scope)), _attribute_named(attr), p.line, f"attribute {target}")
    if p.kind == "default":
        func_qualname, _, arg = target.rpartition(".")
        return _default_node(_scope(tree, func_qualname), arg, target)
    if p.kind == "value":
        return _local_value(p, tree, target)
    raise _Skip(f"kind {p.kind!r} cannot be exported as a diff")


def _attribute_named(attr: str):
    return lambda t: isinstance(t, ast.Attribute) and t.attr == attr


def _assigned_value(statements: list, matches, line: int | None, what: str | None) -> ast.expr | None:
    """The value of the assignment to a matching target (the one at `line` if given, else the last)."""
    candidates = []
    for node in statements:
        if isinstance(node, ast.Assign) and any(matches(t) for t in node.targets):
            candidates.append(node)
        elif isinstance(node, ast.AnnAssign) and node.value is not None and matches(node.target):
            candidates.append(node)
    if line is not None:
        at_line = [n for n in candidates if n.lineno <= line <= (n.end_lineno or n.lineno)]
        candidates = at_line or ([] if candidates and what is not None else candidates)
    if not candidates:
        if what is None:
            return None
        raise _Skip(f"no assignment to {what} found" + (f" at line {line}" if line else ""))
    return candidates[-1].value


def _scope(tree: ast.Module, qualname: str, required: bool = True) -> Any:
    """The class or function a qualname names, walking the AST (`<locals>` steps into a function)."""
    node: Any = tree
    for part in qualname.split("."):
        if part == "<locals>":
            continue
        body = getattr(node, "body", [])
        found = [n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == part]
        if not found:
            found = [n for n in ast.walk(node) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name == part and n is not node]
        if not found:
            if not required:
                return None
            raise _Skip(f"{qualname} not found in the file")
        node = found[-1]  # a later definition wins, as at runtime
    return node


def _default_node(func: Any, arg: str, target: str) -> ast.expr:
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise _Skip(f"{target}: not a function")
    args = func.args
    positional = args.posonlyargs + args.args
    offset = len(positional) - len(args.defaults)
    for index, a in enumerate(positional):
        if a.arg == arg and index >= offset:
            return args.defaults[index - offset]
    for a, default in zip(args.kwonlyargs, args.kw_defaults):
        if a.arg == arg and default is not None:
            return default
    raise _Skip(f"{target}: the function has no default for {arg!r}")


def _local_value(p: ExportParam, tree: ast.Module, target: str) -> ast.expr:
    calls = [n for n in ast.walk(tree) if _is_param_call(n)]
    if p.line is not None:
        calls = [c for c in calls if c.lineno <= p.line <= (c.end_lineno or c.lineno)]
    if len(calls) != 1:
        raise _Skip(f"cannot tell which param() call declares it ({len(calls)} candidates)")
    return calls[0]


def _function_edit(p: ExportParam, tree: ast.Module, text: str) -> _Edit:
    qualname = p.target or p.name
    candidates = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.name == qualname.rpartition(".")[2]]
    if p.line is not None:
        at_line = [n for n in candidates if p.line in (n.lineno, *(d.lineno for d in n.decorator_list))]
        candidates = at_line or candidates
    if len(candidates) > 1 and p.target:
        try:
            candidates = [_scope(tree, p.target)]
        except _Skip:
            pass
    if len(candidates) != 1:
        raise _Skip(f"function {qualname} not found exactly once in {p.file}")
    node = candidates[0]
    lines = text.splitlines(keepends=True)
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    if isinstance(p.old, str) and p.old.strip():
        with_decorators = textwrap.dedent("".join(lines[first - 1: node.end_lineno]))
        bare = textwrap.dedent("".join(lines[node.lineno - 1: node.end_lineno]))
        if _normalise(textwrap.dedent(p.old)) not in (_normalise(with_decorators), _normalise(bare)):
            raise _Skip(f"{p.file} changed since the run: {qualname} is not the source that was optimised")
    if not isinstance(p.new, str):
        raise _Skip("its new source is not text")
    new_text, new_node = _parse_new_function(p.new, qualname)
    new_lines = new_text.splitlines(keepends=True)
    old_header_end, new_header_end = _header_end(node), _header_end(new_node)
    if node.body[0].lineno > old_header_end and new_node.body[0].lineno > new_header_end:
        # Replace the body only: the header in the file keeps its decorators,
        # its `tracer.param(...)` defaults and its formatting (the signature
        # cannot change anyway).
        old_body_line = lines[node.body[0].lineno - 1]
        indent = old_body_line[: len(old_body_line) - len(old_body_line.lstrip())]
        replacement = _reindent(new_lines, new_header_end + 1, new_node.end_lineno, indent)
        return _Edit((old_header_end + 1, 0), (node.end_lineno + 1, 0), replacement, p.name, whole_lines=True)
    header = lines[node.lineno - 1]
    indent = header[: len(header) - len(header.lstrip())]
    replacement = _reindent(new_lines, new_node.lineno, new_node.end_lineno, indent)
    return _Edit((node.lineno, 0), (node.end_lineno + 1, 0), replacement, p.name, whole_lines=True)


def _parse_new_function(source: str, qualname: str) -> tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    text = textwrap.dedent(source)
    if not text.endswith("\n"):
        text += "\n"
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise _Skip(f"its new source does not parse (line {exc.lineno}: {exc.msg})") from None
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(defs) != 1:
        raise _Skip(f"its new source does not hold exactly one function ({qualname})")
    return text, defs[0]


def _header_end(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Last line of a def's header (name, parameters, return annotation)."""
    end = node.lineno
    parts: list[ast.AST] = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                            *node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
    parts += [a for a in (node.args.vararg, node.args.kwarg, node.returns) if a is not None]
    for part in parts:
        end = max(end, getattr(part, "end_lineno", None) or end)
    return end


def _reindent(lines: list[str], first: int, last: int, indent: str) -> str:
    """Lines first..last (1-based) moved to `indent`; lines inside multi-line strings stay as they are."""
    inside_strings = _string_continuation_lines("".join(lines))
    chosen = [(number, lines[number - 1]) for number in range(first, last + 1)]
    code = [text for number, text in chosen if number not in inside_strings and text.strip()]
    common = min((len(text) - len(text.lstrip()) for text in code), default=0)
    out = []
    for number, text in chosen:
        if number in inside_strings or not text.strip():
            out.append(text)
        else:
            out.append(indent + text[common:])
    result = "".join(out)
    return result if result.endswith("\n") else result + "\n"


def _string_continuation_lines(text: str) -> set[int]:
    """Line numbers that continue a multi-line string token (their indentation is data)."""
    lines: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.STRING and token.end[0] > token.start[0]:
                lines.update(range(token.start[0] + 1, token.end[0] + 1))
            elif getattr(tokenize, "FSTRING_MIDDLE", None) == token.type and token.end[0] > token.start[0]:
                lines.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass
    return lines


def _normalise(source: str) -> list[str]:
    return [line.rstrip() for line in source.strip().splitlines()]


# -- writing ------------------------------------------------------------------------------


def _apply_edits(text: str, edits: list[_Edit]) -> tuple[str, list[str]]:
    """`text` with the edits made, and why any edit was left out.

    A value inside a function whose whole source changes (a default, or a
    `param()` call in its body) is left out: the new source decides it.
    """
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def absolute(position: tuple[int, int]) -> int:
        line, col = position
        return offsets[min(line - 1, len(lines))] + col

    spans = sorted(((absolute(e.start), absolute(e.end), e) for e in edits), key=lambda s: (s[0], -s[1]))
    kept: list[tuple[int, int, _Edit]] = []
    dropped = []
    for start, end, edit in spans:
        if kept and start < kept[-1][1]:
            outer = kept[-1][2]
            if outer.whole_lines and not edit.whole_lines:
                dropped.append(f"# not in the diff: {edit.name}: it is inside {outer.name}, whose new source "
                               "is in the diff (edit it there)")
                continue
            dropped.append(f"# not in the diff: {edit.name}: overlaps the change of {outer.name}")
            continue
        kept.append((start, end, edit))
    out, cursor = [], 0
    for start, end, edit in kept:
        out.append(text[cursor:start])
        out.append(edit.text)
        cursor = end
    out.append(text[cursor:])
    return "".join(out), dropped


def _unified(original: str, changed: str, rel: str) -> str:
    diff = difflib.unified_diff(original.splitlines(keepends=True), changed.splitlines(keepends=True),
                                fromfile=f"a/{rel}", tofile=f"b/{rel}")
    out = [f"diff --git a/{rel} b/{rel}\n"]
    for line in diff:
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
    return "".join(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value
