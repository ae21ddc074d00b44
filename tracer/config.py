"""What to trace: the marking configuration `trace-run` resolves and carries to every process.

Sources, highest precedence first:

1. `trace-run` flags (`--target`, `--trainable`, `--param`, `--session`, ...),
2. environment variables (`TRACE_TARGETS`, `TRACE_TRAINABLE`, ... see `ENV`),
3. `[tool.trace]` in the nearest `pyproject.toml` (searched from the script's
   directory, or the current directory for `-m`, upward),
4. the defaults of `TraceConfig`.

Single values (session, granularity, llm, in_process, autostart) come from the
highest source that sets them. Lists (targets, trainable, params) are *joined*
across all sources, in the order pyproject, environment, flags, without
duplicates: flags add to what the project file marks, they never silently
unmark it.

A resolved config travels to child processes as environment variables
(`to_environ()`); a child reads it back with `TraceConfig.from_environ()` and
never looks at a `pyproject.toml` again, so every process of a run marks the
same code. Lists in environment variables are separated by ",".

    [tool.trace]
    session = "qa-bot"
    targets = ["app.agent:*", "__main__:main"]
    trainable = ["app.prompts:build_prompt"]
    params = ["app.prompts:SYSTEM", "app.agent:Agent.temperature"]
    granularity = "call"          # or "op"
    llm = "openai:gpt-4o-mini"
    in-process = false
    autostart = true
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping

from tracer.errors import TracerError

GRANULARITIES = ("call", "op")

# setting -> environment variable that carries it
ENV = {
    "session": "TRACE_SESSION",
    "targets": "TRACE_TARGETS",
    "trainable": "TRACE_TRAINABLE",
    "params": "TRACE_PARAMS",
    "granularity": "TRACE_GRANULARITY",
    "llm": "TRACE_LLM",
    "in_process": "TRACE_IN_PROCESS",
    "autostart": "TRACE_AUTOSTART",
}
LIST_SETTINGS = ("targets", "trainable", "params")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
# qualnames may name nested functions: outer.<locals>.inner
_QUALNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.(<locals>|[A-Za-z_][A-Za-z0-9_]*))*\Z")


class ConfigError(TracerError):
    """The marking configuration is invalid; the message names the setting, where it came from, and the fix."""


@dataclass(frozen=True)
class Target:
    """One marked function (or `*`: every function and method defined in `module`)."""

    module: str
    qualname: str
    trainable: bool = False

    @property
    def is_wildcard(self) -> bool:
        return self.qualname == "*"


@dataclass(frozen=True)
class ModuleMarks:
    """The targets of one module: what the import hook rewrites there."""

    module: str
    qualnames: Mapping[str, bool]  # qualname -> trainable
    wildcard: bool = False  # every function and method defined at module or class level
    wildcard_trainable: bool = False

    def trainable(self, qualname: str) -> bool | None:
        """True/False if `qualname` is marked (trainable or not), None if it is not marked."""
        if qualname in self.qualnames:
            return self.qualnames[qualname]
        if self.wildcard and "<locals>" not in qualname:
            return self.wildcard_trainable
        return None

    def wants_nested(self, qualname: str) -> bool:
        """Whether a marked function lives inside `qualname` (so the rewriter must look inside it)."""
        prefix = qualname + "."
        return any(q.startswith(prefix) for q in self.qualnames) or (self.wildcard and "<locals>" not in qualname)

    def key(self) -> str:
        """Stable text of these marks, for cache keys."""
        items = ",".join(f"{q}={int(t)}" for q, t in sorted(self.qualnames.items()))
        return f"{self.module}|{items}|*={int(self.wildcard)}{int(self.wildcard_trainable)}"


@dataclass(frozen=True)
class TraceConfig:
    """The resolved configuration that `runtime.start(config)` and the import hook receive.

    `targets` and `trainable` are `module:qualname` strings (`module:*` for a
    whole module); a trainable target is also traced. `params` are
    `module:name` (a module global) or `module:Class.attr` (a class attribute).
    `origins` says where each setting came from (for `trace-run --show-config`
    and error messages); it is not part of equality or the hash.
    """

    session: str | None = None
    targets: tuple[str, ...] = ()
    trainable: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    granularity: str = "call"
    llm: str | None = None
    in_process: bool = False
    autostart: bool = True
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        _validate(self)

    # -- marking -----------------------------------------------------------

    def all_targets(self) -> list[Target]:
        """Every marked target, trainable ones included (trainable wins when both name a function)."""
        result: dict[tuple[str, str], Target] = {}
        for text in self.targets:
            module, qualname = text.split(":", 1)
            result.setdefault((module, qualname), Target(module, qualname, False))
        for text in self.trainable:
            module, qualname = text.split(":", 1)
            result[(module, qualname)] = Target(module, qualname, True)
        return list(result.values())

    def marked_modules(self) -> frozenset[str]:
        """Names of the modules that contain marked code (the import hook's cheap first check)."""
        return frozenset(t.module for t in self.all_targets())

    def hooked_modules(self) -> frozenset[str]:
        """Names of the modules the import hook must see: marked code, or parameters declared by configuration."""
        return self.marked_modules() | frozenset(spec.split(":", 1)[0] for spec in self.params)

    def params_for(self, *module_names: str) -> list[str]:
        """The `--param` specs that name a global or class attribute of a module known under `module_names`."""
        return [spec for spec in self.params if spec.split(":", 1)[0] in module_names]

    def marks_for(self, *module_names: str) -> ModuleMarks | None:
        """The marks that apply to a module known under `module_names` (e.g. "__main__" and "pkg.cli" for -m), or None."""
        qualnames: dict[str, bool] = {}
        wildcard = wildcard_trainable = False
        found = False
        for target in self.all_targets():
            if target.module not in module_names:
                continue
            found = True
            if target.is_wildcard:
                wildcard = True
                wildcard_trainable = wildcard_trainable or target.trainable
            else:
                qualnames[target.qualname] = qualnames.get(target.qualname, False) or target.trainable
        if not found:
            return None
        return ModuleMarks(module_names[0], qualnames, wildcard, wildcard_trainable)

    def stable_hash(self) -> str:
        """Hex digest of everything that changes how code is rewritten (targets, trainable, params, granularity).

        The import hook's cache keys use the per-module part of this
        (`ModuleMarks.key()` plus the granularity), so marking one more module
        does not invalidate the cached code of every other one.
        """
        text = "|".join([
            ",".join(sorted(self.targets)),
            ",".join(sorted(self.trainable)),
            ",".join(sorted(self.params)),
            self.granularity,
        ])
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    # -- carrying to child processes ---------------------------------------

    def to_environ(self) -> dict[str, str]:
        """The environment variables that make a child process resolve exactly this config."""
        env = {
            ENV["targets"]: ",".join(self.targets),
            ENV["trainable"]: ",".join(self.trainable),
            ENV["params"]: ",".join(self.params),
            ENV["granularity"]: self.granularity,
            ENV["in_process"]: "1" if self.in_process else "0",
            ENV["autostart"]: "1" if self.autostart else "0",
        }
        if self.session is not None:
            env[ENV["session"]] = self.session
        if self.llm is not None:
            env[ENV["llm"]] = self.llm
        return env

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "TraceConfig":
        """The config carried by environment variables alone (what a child process of `trace-run` uses)."""
        settings = _settings_from_environ(os.environ if environ is None else environ)
        return _build([("environment", settings)])


# -- resolving -----------------------------------------------------------------


def resolve(
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    start_dir: str | os.PathLike[str] | None = None,
) -> TraceConfig:
    """Merge flags, environment and `[tool.trace]` (found from `start_dir` upward) into one config.

    `flags` uses the setting names of `TraceConfig` (`targets` etc. as lists;
    None or missing means "not given"). Raises ConfigError naming the bad
    setting and its source.
    """
    environ = os.environ if environ is None else environ
    sources: list[tuple[str, dict[str, Any]]] = []
    pyproject = find_pyproject(start_dir if start_dir is not None else os.getcwd())
    if pyproject is not None:
        table = load_pyproject_table(pyproject)
        if table is not None:
            sources.append((f"{pyproject} [tool.trace]", table))
    sources.append(("environment", _settings_from_environ(environ)))
    if flags:
        given = {k: v for k, v in flags.items() if v is not None and v != [] and v != ()}
        unknown = set(given) - _SETTING_NAMES
        if unknown:
            raise ConfigError(f"unknown trace-run setting(s): {', '.join(sorted(unknown))}")
        sources.append(("command line", {k: _as_list(v) if k in LIST_SETTINGS else v for k, v in given.items()}))
    return _build(sources)


def find_pyproject(start_dir: str | os.PathLike[str]) -> str | None:
    """Path of the nearest `pyproject.toml` at or above `start_dir`, or None."""
    directory = os.path.abspath(start_dir)
    while True:
        candidate = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def load_pyproject_table(path: str) -> dict[str, Any] | None:
    """The `[tool.trace]` table of `path` normalised to setting names, or None if the file has none."""
    with open(path, "rb") as f:
        data = f.read()
    if b"tool.trace" not in data and b"[tool]" not in data:
        return None  # no [tool.trace]: avoid importing a TOML parser at all
    toml = _toml_module()
    try:
        document = toml.loads(data.decode("utf-8"))
    except (toml.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse as TOML ({exc}); fix the file or remove its [tool.trace] table") from exc
    table = document.get("tool", {}).get("trace")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.trace] must be a table, got {type(table).__name__}")
    settings: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in _SETTING_NAMES:
            raise ConfigError(
                f"{path}: unknown key {key!r} in [tool.trace]; known keys: "
                + ", ".join(sorted(n.replace("_", "-") for n in _SETTING_NAMES))
            )
        if name in LIST_SETTINGS:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: [tool.trace] {key} must be a list of strings like \"module:qualname\"")
        elif name in ("in_process", "autostart"):
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: [tool.trace] {key} must be true or false, got {value!r}")
        elif not isinstance(value, str):
            raise ConfigError(f"{path}: [tool.trace] {key} must be a string, got {value!r}")
        settings[name] = value
    return settings


BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")
"""Directory whose `sitecustomize.py` traces child Python processes; it holds nothing else importable."""


def child_environ(config: TraceConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `environ` that makes every child Python process trace with `config`.

    Puts the bootstrap directory first on PYTHONPATH (its sitecustomize
    installs the import hook, then runs the user's own sitecustomize) and the
    config in TRACE_* variables.
    """
    env = untraced_environ(environ)
    env.update(config.to_environ())
    existing = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = BOOTSTRAP_DIR + (os.pathsep + existing if existing else "")
    return env


def untraced_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `environ` without the tracer's bootstrap and marking variables (targets, trainable, params, granularity).

    For processes that must not be traced (the optimizer daemon started on
    demand by a traced process): they keep TRACE_DAEMON_SOCKET,
    TRACE_STATE_DIR, TRACE_LLM and TRACE_SESSION but lose the sitecustomize
    bootstrap.
    """
    env = dict(os.environ if environ is None else environ)
    for name in ("targets", "trainable", "params", "granularity"):  # TRACE_LLM, TRACE_SESSION: the daemon may use them
        env.pop(ENV[name], None)
    if "PYTHONPATH" in env:
        kept = [p for p in env["PYTHONPATH"].split(os.pathsep) if p and os.path.abspath(p) != BOOTSTRAP_DIR]
        if kept:
            env["PYTHONPATH"] = os.pathsep.join(kept)
        else:
            del env["PYTHONPATH"]
    return env


# -- internals -----------------------------------------------------------------

_SETTING_NAMES = frozenset(f.name for f in fields(TraceConfig)) - {"origins"}


def _toml_module():
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "reading [tool.trace] from pyproject.toml on Python 3.10 needs the 'tomli' package: pip install tomli"
        ) from exc
    return tomli


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    items: list[str] = []
    for entry in value:
        items.extend(part.strip() for part in str(entry).split(",") if part.strip())
    return items


def _parse_bool(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={text!r} must be one of 1/0, true/false, yes/no, on/off")


def _settings_from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for setting, name in ENV.items():
        if name not in environ:
            continue
        raw = environ[name]
        if setting in LIST_SETTINGS:
            settings[setting] = _as_list(raw)
        elif setting in ("in_process", "autostart"):
            settings[setting] = _parse_bool(raw, name)
        elif raw != "":
            settings[setting] = raw
    return settings


def _build(sources: Iterable[tuple[str, Mapping[str, Any]]]) -> TraceConfig:
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    lists: dict[str, list[str]] = {name: [] for name in LIST_SETTINGS}
    for origin, settings in sources:
        for name, value in settings.items():
            if name in LIST_SETTINGS:
                for item in _as_list(value):
                    _check_list_item(name, item, origin)
                    if item not in lists[name]:
                        lists[name].append(item)
                if value:
                    origins[name] = ", ".join(filter(None, [origins.get(name), origin]))
            else:
                values[name] = value
                origins[name] = origin
    try:
        return TraceConfig(**values, **{k: tuple(v) for k, v in lists.items()}, origins=origins)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (settings from: {'; '.join(f'{k}: {v}' for k, v in sorted(origins.items()))})") from None


def _check_list_item(name: str, item: str, origin: str) -> None:
    module, sep, rest = item.partition(":")
    what = {"targets": "--target", "trainable": "--trainable", "params": "--param"}[name]
    example = "MOD:NAME or MOD:Class.attr" if name == "params" else "MOD:QUALNAME or MOD:*"
    if not sep or not _DOTTED.match(module):
        raise ConfigError(f"{what} {item!r} (from {origin}): expected {example}, e.g. 'mypkg.mod:func'")
    if name == "params":
        ok = _DOTTED.match(rest) is not None
    else:
        ok = rest == "*" or _QUALNAME.match(rest) is not None
    if not ok:
        raise ConfigError(f"{what} {item!r} (from {origin}): {rest!r} is not a valid name; expected {example}")
    root = module.split(".")[0]
    if root in _UNTRACEABLE_ROOTS:
        raise ConfigError(
            f"{what} {item!r} (from {origin}): the tracer cannot trace its own code or the modules it is built on "
            f"({', '.join(sorted(_UNTRACEABLE_ROOTS))})"
        )


# Tracing these would make the tracer observe (and re-enter) itself.
_UNTRACEABLE_ROOTS = frozenset({"tracer", "protocol", "optimizer_service", "bytecode", "msgpack"})


def _validate(config: TraceConfig) -> None:
    if config.granularity not in GRANULARITIES:
        raise ConfigError(f"granularity must be 'call' or 'op', got {config.granularity!r}")
    if config.session is not None and (not config.session.strip() or any(ord(c) < 32 for c in config.session)):
        raise ConfigError(f"session name {config.session!r} must be non-empty printable text")
    if config.llm is not None:
        provider, sep, model = config.llm.partition(":")
        if not sep or not provider or not model:
            raise ConfigError(f"llm {config.llm!r} must be PROVIDER:MODEL, e.g. 'openai:gpt-4o-mini' or 'anthropic:claude-3-5-haiku-latest'")
    for name in LIST_SETTINGS:
        value = getattr(config, name)
        if not isinstance(value, tuple):
            object.__setattr__(config, name, tuple(value))
        for item in getattr(config, name):
            _check_list_item(name, item, config.origins.get(name, "TraceConfig"))


__all__ = [
    "BOOTSTRAP_DIR",
    "ConfigError",
    "ENV",
    "GRANULARITIES",
    "ModuleMarks",
    "Target",
    "TraceConfig",
    "find_pyproject",
    "load_pyproject_table",
    "resolve",
    "child_environ",
    "untraced_environ",
]
