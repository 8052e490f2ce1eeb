"""Plug-ins: agents and tasks named by import path or by an installed package's entry point.

A *spec* names an object outside the suite's packages::

    mypkg.learners:MyBC                   module:name (name may be dotted: Outer.Inner)
    path/to/learners.py:MyBC              a Python file, imported by path (no package needed)
    mypkg.learners:MyBC?hidden=32&lr=1e-3 keyword arguments, URL-query style
    my-bc?hidden=32                       an entry-point name, with keyword arguments

Each keyword value is read as JSON when it parses (``32``, ``1e-3``, ``true``, ``null``,
``"text"``, ``[32,32]``) and as a plain string otherwise. The form has no spaces or top-level
commas, so a spec survives the shell and ``--agents``' comma split (lists in brackets are
kept whole by :func:`split_specs`); write exponents without ``+`` (``1e3``), since ``+``
joins the candidates of ``rho-select:a+b``.

Installed packages declare plug-ins in the entry-point groups :data:`AGENT_GROUP`
(``ntp_gym.agents``) and :data:`TASK_GROUP` (``ntp_gym.tasks``), e.g. in ``pyproject.toml``::

    [project.entry-points."ntp_gym.agents"]
    my-bc = "mypkg.learners:MyBC"
    [project.entry-points."ntp_gym.tasks"]
    my-task = "mypkg.tasks:make_task"

Task plug-ins (:func:`resolve_task`, behind :func:`ntp_envs.make_task`): an entry-point name,
an import path, or a Gymnasium env id registered by another package (``mypkg/Foo-v0``, or
``mypkg.envs:Foo-v0``, which imports ``mypkg.envs`` first). The object is called with the
task's keyword arguments (``horizon`` included) and must return a
:class:`~ntp_envs.task.SequenceTask` or a Gymnasium env whose ``unwrapped.task`` is one.
A task must rebuild from ``make_task(task.env_id, **task.params)`` to be saved with a policy.
What a task provides decides how it is scored: see ``docs/plugins.md``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym

from ntp_envs.registry import registered_env_ids
from ntp_envs.task import SequenceTask

__all__ = ["AGENT_GROUP", "TASK_GROUP", "Spec", "check_task", "describe_failure",
           "entry_point_names", "import_object", "load_entry_point", "parse_spec",
           "resolve_task", "split_specs"]

AGENT_GROUP = "ntp_gym.agents"
TASK_GROUP = "ntp_gym.tasks"
SPEC_FORMS = ("module:name", "path/to/file.py:name", "either with ?key=value&key=value")

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_IMPORT_PATH = re.compile(rf"^(?P<module>{_DOTTED}|[^:?]+\.py):(?P<attr>{_DOTTED})$")
_ENTRY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Spec:
    """A parsed spec: ``target`` (an import path or an entry-point name) and its kwargs."""

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_import_path(self) -> bool:
        return _IMPORT_PATH.match(self.target) is not None


def split_specs(text: str, sep: str) -> list[str]:
    """``text`` split on ``sep`` outside brackets (``[]``, ``{}``, ``()``); blanks dropped."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == sep and depth <= 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_spec(text: str, flag: str) -> Spec:
    """``target?key=value&...`` -> :class:`Spec`; ValueError naming ``flag`` when malformed."""
    target, _, query = text.strip().partition("?")
    if not target:
        raise ValueError(f"{flag}: empty plug-in name in {text!r}")
    kwargs: dict[str, Any] = {}
    for item in split_specs(query, "&") if query else []:
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"{flag}: keyword arguments must read ?key=value&key=value "
                             f"(key a Python name), got {item!r} in {text!r}")
        if key in kwargs:
            raise ValueError(f"{flag}: keyword {key!r} given twice in {text!r}")
        kwargs[key] = _value(value)
    return Spec(target, kwargs)


def _import_file(path: Path, flag: str) -> Any:
    """The module of a Python file, imported once under a name derived from its path."""
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise ValueError(f"{flag}: no such Python file {str(path)!r}")
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    name = f"_ntp_gym_plugin_{resolved.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ValueError(f"{flag}: cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_object(target: str, flag: str) -> Any:
    """The object at ``module:attr`` (or ``file.py:attr``); one-line ValueError naming ``flag``
    when the module does not import or lacks the attribute."""
    match = _IMPORT_PATH.match(target)
    if match is None:
        raise ValueError(f"{flag}: {target!r} is not an import path ({', '.join(SPEC_FORMS)})")
    module_name, attr = match["module"], match["attr"]
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name), flag)
        else:
            module = importlib.import_module(module_name)
    except ValueError:
        raise
    except (Exception, SystemExit) as err:  # noqa: BLE001 - any import failure is one line
        raise ValueError(f"{flag}: cannot import {module_name!r} ({describe_failure(err)})"
                         ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{flag}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def describe_failure(err: BaseException) -> str:
    """One line on why plug-in code failed: ``Type: message``, or the ``sys.exit`` it called."""
    if isinstance(err, SystemExit):
        return f"it called sys.exit({err.code!r})"
    return " ".join(f"{type(err).__name__}: {err}".split())


def _entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=group)}


def entry_point_names(group: str) -> list[str]:
    """Names that installed packages declare in entry-point ``group`` (sorted)."""
    return sorted(_entry_points(group))


def load_entry_point(group: str, name: str, flag: str) -> Any | None:
    """The object of entry point ``name`` in ``group`` (``None`` when there is none)."""
    found = _entry_points(group).get(name)
    if found is None:
        return None
    try:
        return found.load()
    except (Exception, SystemExit) as err:  # noqa: BLE001 - a broken plug-in is one line
        raise ValueError(f"{flag}: entry point {name!r} ({found.value}) of group {group} does "
                         f"not load ({describe_failure(err)})") from None


def _task_factory(env_id: str, flag: str) -> tuple[Any, dict[str, Any]] | None:
    """``(factory, spec kwargs)`` of an entry-point or import-path task; ``None`` for a
    Gymnasium env id."""
    spec = parse_spec(env_id, flag)
    obj = load_entry_point(TASK_GROUP, spec.target, flag)
    if obj is None and spec.is_import_path:
        obj = import_object(spec.target, flag)
    if obj is None:
        if spec.kwargs:
            raise ValueError(f"{flag}: ?key=value applies to a plug-in task (entry point or "
                             f"module:name), not to the env id {spec.target!r}")
        return None
    if not callable(obj):
        raise ValueError(f"{flag}: {spec.target!r} is a {type(obj).__name__}, not a task "
                         "factory (a callable returning a SequenceTask or an env)")
    return obj, spec.kwargs


def _gym_spec(env_id: str, flag: str) -> str:
    """The registered Gymnasium id of ``env_id`` (``module:id`` imports ``module`` first)."""
    module, colon, bare = env_id.rpartition(":")
    if colon:
        try:
            importlib.import_module(module)
        except (Exception, SystemExit) as err:  # noqa: BLE001 - any import failure: one line
            raise ValueError(f"{flag}: cannot import {module!r} for the Gymnasium id {bare!r} "
                             f"({describe_failure(err)})") from None
    try:
        gym.spec(bare)
        return bare
    except Exception as err:  # noqa: BLE001 - gymnasium's NameNotFound, ModuleNotFound, ...
        raise ValueError(
            f"{flag}: {env_id!r} is not a known task: not a suite env "
            f"({', '.join(registered_env_ids())}), not an entry point of "
            f"{TASK_GROUP} ({', '.join(entry_point_names(TASK_GROUP)) or 'none installed'}), "
            f"not an import path, not a registered Gymnasium id ({type(err).__name__}: {err})"
        ) from None


def check_task(env_id: str, flag: str = "env_id") -> None:
    """Check that ``env_id`` names a plug-in task or a registered Gymnasium id, without
    building it; ValueError naming ``flag`` otherwise."""
    if _task_factory(env_id, flag) is None:
        _gym_spec(env_id, flag)


def _as_task(value: Any, source: str, flag: str) -> SequenceTask:
    task = getattr(getattr(value, "unwrapped", None), "task", None) if isinstance(
        value, gym.Env) else value
    if not isinstance(task, SequenceTask):
        raise ValueError(f"{flag}: {source} gave a {type(value).__name__}, not a SequenceTask "
                         "(nor a Gymnasium env whose unwrapped.task is one)")
    return task


def resolve_task(env_id: str, kwargs: dict[str, Any], flag: str = "env_id") -> SequenceTask:
    """The :class:`SequenceTask` of a plug-in ``env_id`` built with ``kwargs`` (module doc)."""
    found = _task_factory(env_id, flag)
    if found is not None:
        factory, spec_kwargs = found
        clash = set(spec_kwargs) & set(kwargs)
        if clash:
            raise ValueError(f"{flag}: {sorted(clash)} given both in {env_id!r} and as kwargs")
        try:
            built = factory(**spec_kwargs, **kwargs)
        except SystemExit as err:
            raise ValueError(f"{flag}: {env_id!r} exits when called ({describe_failure(err)})"
                             ) from None
        return _as_task(built, repr(env_id), flag)
    env = gym.make(_gym_spec(env_id, flag), disable_env_checker=True, **kwargs)
    return _as_task(env, f"gymnasium.make({env_id!r})", flag)
