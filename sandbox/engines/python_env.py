"""What a restricted Python script can see: builtins, guards, importable modules and the globals.

Everything here is an allowlist. RestrictedPython rewrites `a.b`, `a[b]`, `a.b = c`, iteration and
`print` into calls of the guard names (`_getattr_`, `_getitem_`, `_write_`, `_getiter_`, `_print_`,
...); this module supplies those guards, the builtins, module stand-ins that carry only their listed
public names, and `Session`/`Artifact`/`State`/`Hook`/`Event` built from `scriptpool.sandbox.catalog`.
"""

from __future__ import annotations

import base64
import bisect
import codecs
import collections
import datetime
import functools
import hashlib
import heapq
import itertools
import json
import math
import operator
import posixpath
import random
import re
import string
import time
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, cast

from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    raise_,
    safe_builtins,
    safer_getattr,
)

from scriptpool import errors as host_errors
from scriptpool.sandbox.catalog import GLOBAL_OPS, aliases
from scriptpool.sandbox.script_clock import ScriptClock
from scriptpool.values import MAX_DEPTH, PlainValue

# ------------------------------------------------------------------ errors scripts can catch


class GuestError(Exception):
    """The error a failed global call raises in a script: `.code`, `.message`, str "CODE: message"."""

    code = "INTERNAL"

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


GuestError.__name__ = GuestError.__qualname__ = "ScriptpoolError"
GuestError.__module__ = "scriptpool"

_HOST_ERROR_CLASSES = (
    host_errors.InvalidArgument,
    host_errors.NotFound,
    host_errors.AlreadyExists,
    host_errors.PermissionDenied,
    host_errors.Unauthenticated,
    host_errors.FailedPrecondition,
    host_errors.ResourceExhausted,
    host_errors.Unavailable,
    host_errors.Unimplemented,
    host_errors.DeadlineExceeded,
    host_errors.DataLoss,
    host_errors.Internal,
)
GUEST_ERRORS: dict[str, type[GuestError]] = {
    cls.code: type(cls.__name__, (GuestError,), {"code": cls.code, "__module__": "scriptpool"})
    for cls in _HOST_ERROR_CLASSES
}


def guest_error(code: str, message: str) -> GuestError:
    cls = GUEST_ERRORS.get(code)
    return cls(message) if cls is not None else GuestError(message, code)


# ------------------------------------------------------------------ values across the bridge


def to_plain(value: object, depth: int = 0, seen: frozenset[int] = frozenset()) -> PlainValue:
    """Copy a script value into plain data without running any script code; TypeError if not JSON-like.

    Subclasses are read through the base type's own methods (`dict.items(v)`, `str.__str__(v)`),
    so a script class cannot run code in a host frame by overriding them.
    """
    if value is None or type(value) in (bool, int, float, str, bytes):
        return value  # type: ignore[return-value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, (dict, list, tuple)):
        raise TypeError(f"a {type(value).__name__} cannot be passed or returned as a value (JSON-like values only)")
    if depth >= MAX_DEPTH or id(value) in seen:
        what = "contains itself" if id(value) in seen else f"is nested deeper than {MAX_DEPTH} levels"
        raise TypeError(f"a value that {what} cannot be passed or returned")
    seen = seen | {id(value)}
    if isinstance(value, dict):
        out: dict[str, PlainValue] = {}
        for key, item in dict.items(value):
            if not isinstance(key, str):
                raise TypeError(f"map keys must be strings, got a {type(key).__name__}")
            out[str.__str__(key)] = to_plain(item, depth + 1, seen)
        return out
    items = list.__iter__(value) if isinstance(value, list) else tuple.__iter__(value)
    return [to_plain(item, depth + 1, seen) for item in items]


# ------------------------------------------------------------------ modules


def _public(module: types.ModuleType) -> tuple[str, ...]:
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    return tuple(n for n in names if not isinstance(getattr(module, n, None), types.ModuleType))


# name -> the attributes a script may use. Modules that would hand out other modules, file or
# process access, attribute getters that skip the guard (operator.attrgetter), code evaluation
# (functools.singledispatch evaluates annotation strings) or str.format machinery are left out.
MODULE_ALLOWLIST: dict[str, tuple[str, ...]] = {
    "math": _public(math),
    "itertools": _public(itertools),
    "bisect": _public(bisect),
    "heapq": _public(heapq),
    "json": ("dumps", "loads", "JSONDecodeError"),
    "re": ("compile", "match", "search", "fullmatch", "split", "findall", "finditer", "sub", "subn", "escape",
           "error", "Pattern", "Match", "IGNORECASE", "I", "MULTILINE", "M", "DOTALL", "S", "VERBOSE", "X",
           "ASCII", "A", "UNICODE", "U"),
    "datetime": ("date", "datetime", "time", "timedelta", "timezone", "tzinfo", "MINYEAR", "MAXYEAR"),
    # no sleep; the C datetime module also imports this one (strftime) through the import guard
    "time": ("time", "time_ns", "monotonic", "perf_counter", "process_time", "strftime", "gmtime", "localtime",
             "mktime", "struct_time", "timezone", "altzone", "daylight", "tzname"),
    "string": ("ascii_letters", "ascii_lowercase", "ascii_uppercase", "digits", "hexdigits", "octdigits",
               "punctuation", "printable", "whitespace", "capwords", "Template"),
    "functools": ("reduce", "partial", "lru_cache", "cache", "cmp_to_key"),
    "collections": ("OrderedDict", "defaultdict", "Counter", "deque", "namedtuple", "ChainMap"),
    "base64": ("b64encode", "b64decode", "urlsafe_b64encode", "urlsafe_b64decode", "b16encode", "b16decode",
               "b32encode", "b32decode"),
    "hashlib": ("md5", "sha1", "sha256", "sha512", "blake2b", "sha3_256"),
    "random": ("random", "randint", "randrange", "choice", "choices", "shuffle", "sample", "uniform", "gauss",
               "seed", "getrandbits", "randbytes", "triangular", "normalvariate", "expovariate", "betavariate",
               "gammavariate", "lognormvariate", "vonmisesvariate", "paretovariate", "weibullvariate", "Random"),
}  # fmt: skip

_REAL_MODULES: dict[str, types.ModuleType] = {
    m.__name__: m
    for m in (math, itertools, bisect, heapq, json, re, datetime, string, functools, collections, base64, hashlib)
}


class GuestModule:
    """What `import json` gives a script: only the allowlisted names, no `__name__`, no host path.

    Not a real module on purpose: `from json import decoder` falls back to
    `sys.modules[module.__name__ + ".decoder"]` for real modules, which would hand out submodules.
    """

    __slots__ = ("_module_name", "_members")

    def __init__(self, name: str, members: dict[str, Any]) -> None:
        self._module_name = name
        self._members = members

    def __getattr__(self, attr: str) -> Any:
        try:
            return self._members[attr]
        except KeyError:
            raise AttributeError(f"module {self._module_name!r} has no attribute {attr!r}") from None

    def __repr__(self) -> str:
        return f"<module {self._module_name!r}>"


GuestModule.__name__ = GuestModule.__qualname__ = "module"
_SHARED_MODULES: dict[str, GuestModule] = {}


def _stand_in(name: str, source: object) -> GuestModule:
    members = {a: random.Random if a == "Random" else getattr(source, a) for a in MODULE_ALLOWLIST[name]}
    return GuestModule(name, members)


def shared_module(name: str) -> GuestModule:
    """Stand-ins without state are built once per process; scripts cannot write to modules."""
    module = _SHARED_MODULES.get(name)
    if module is None:
        module = _SHARED_MODULES[name] = _stand_in(name, _REAL_MODULES[name])
    return module


def prepare_modules() -> None:
    for name in _REAL_MODULES:
        shared_module(name)
    # datetime.strptime imports _strptime on first use: do it before any jail narrows file access.
    datetime.datetime.strptime("2000", "%Y")


# ------------------------------------------------------------------ guards


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "|=": operator.ior, "^=": operator.ixor, "&=": operator.iand,
    "@=": operator.imatmul,
}  # fmt: skip
_WRITABLE_TYPES = (dict, list, set, bytearray, collections.deque)


def _check_name(name: object) -> str:
    if type(name) is not str:
        raise TypeError("attribute names must be strings")
    if name.startswith("_"):
        raise AttributeError(f'"{name}" is not accessible in the sandbox because it starts with "_"')
    return name


def guarded_getattr(obj: object, name: str, default: object = raise_) -> Any:
    """`a.b` and `getattr`: no `_` names, no str.format/Formatter, no frames, no real modules."""
    value = safer_getattr(obj, _check_name(name), default)  # type: ignore[no-untyped-call]
    if isinstance(value, types.ModuleType) and value is not default:
        raise AttributeError(f"module attributes of {type(obj).__name__} are not accessible in the sandbox")
    return value


def guarded_hasattr(obj: object, name: str) -> bool:
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


def guarded_getitem(obj: Any, key: Any) -> Any:
    return obj[key]


def inplace_var(op: str, target: Any, value: Any) -> Any:
    return _OPERATORS[op](target, value)


def apply_call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


class _Printer:
    """`print` in the script. One per module/function scope (RestrictedPython's `_print_` protocol)."""

    __slots__ = ("_out", "_text")

    def __init__(self, write: Callable[[str], None]) -> None:
        self._out = write
        self._text: list[str] = []

    def _call_print(self, *objects: object, sep: str | None = " ", end: str | None = "\n", file: None = None,
                    flush: bool = False) -> None:  # fmt: skip
        if file is not None:
            raise TypeError("print(file=...) is not available in the sandbox")
        if not isinstance(sep, (str, type(None))) or not isinstance(end, (str, type(None))):
            raise TypeError("sep and end must be None or a string")
        text = (" " if sep is None else sep).join(map(str, objects)) + ("\n" if end is None else end)
        self._text.append(text)
        self._out(text)

    def __call__(self) -> str:  # the `printed` name
        return "".join(self._text)


# ------------------------------------------------------------------ the script's globals


class Namespace:
    """`Session`, `Artifact`, ...: one subclass per global, built once from the catalog; an instance
    per job holds that job's `call`. Scripts can call the operations but not change them."""

    __slots__ = ("_call",)
    _global_name = ""

    def __init__(self, call: Callable[[str, list[PlainValue]], PlainValue]) -> None:
        self._call = call

    def __repr__(self) -> str:
        return f"<{self._global_name}>"


class _Handler:
    __slots__ = ("active", "fn", "hook", "id", "priority", "what")

    def __init__(self, handler_id: str, what: str, fn: Callable[[Any], Any], hook: bool, priority: int) -> None:
        self.id, self.what, self.fn, self.hook, self.active = handler_id, what, fn, hook, True
        self.priority = priority


class HookHandle(str):
    """What `Hook.register` returns (rs-llmspell's handle): the hook id string itself, so it works
    wherever the id did, with `id()`, `hook_point()` / `hookPoint()` (both raise once the hook is
    unregistered) and `unregister()` (True the first time, False after)."""

    def __new__(cls, handler: _Handler, callbacks: Callbacks) -> HookHandle:
        handle = super().__new__(cls, handler.id)
        handle.__dict__.update(_handler=handler, _callbacks=callbacks)
        return handle

    def _live(self) -> _Handler:
        handler: _Handler = self.__dict__["_handler"]
        if not handler.active:
            raise guest_error("FAILED_PRECONDITION", "hook already unregistered")
        return handler

    @property
    def hook_id(self) -> str:
        return str.__str__(self)

    def id(self) -> str:
        return self._live().id

    def hook_point(self) -> str:
        return self._live().what

    hookPoint = hook_point

    def unregister(self) -> PlainValue:
        callbacks: Callbacks = self.__dict__["_callbacks"]
        return callbacks.drop("Hook.unregister", (self,))


class Callbacks:
    """One job's `Event.on` / `Hook.register` callbacks, kept in the script's process and run after
    each later global call returns, with every matching event that has arrived by then (a
    subscription and `Event.receive`, or `Hook.receive` for a hook, on the wire). Handlers are kept
    in priority order (lowest value first, then registration order; Event.on callbacks are
    "normal", 0). Delivery goes in rounds, each giving every handler that still has events its next
    one: an event several hooks receive reaches them in priority order. Calling it makes a global call."""

    def __init__(self, call: Callable[[str, list[PlainValue]], PlainValue]) -> None:
        self._wire = call
        self._handlers: list[_Handler] = []
        self._delivering = False

    def __call__(self, op: str, args: list[PlainValue]) -> PlainValue:
        result = self._wire(op, args)
        if self._handlers and not self._delivering:
            self._deliver()
        return result

    def _next_event(self, handler: _Handler) -> PlainValue:
        if handler.hook:
            return self._wire("Hook.receive", [handler.id])
        return self._wire("Event.receive", [handler.id, 0])

    def _deliver(self) -> None:
        self._delivering = True
        try:
            round_ = list(self._handlers)
            while round_:
                again = []
                for handler in round_:
                    if not handler.active:
                        continue
                    event = self._next_event(handler)
                    if event is None:
                        continue
                    again.append(handler)
                    handler.fn(event)
                round_ = again
        finally:
            self._delivering = False

    def _insert(self, handler: _Handler) -> None:
        at = next((i for i, h in enumerate(self._handlers) if h.priority > handler.priority), len(self._handlers))
        self._handlers.insert(at, handler)

    def add(self, kind: str, args: tuple[Any, ...]) -> PlainValue:
        what = args[0] if args else None
        fn = args[1] if len(args) > 1 else None
        if not callable(fn):
            raise guest_error("INVALID_ARGUMENT", f"{kind}: the callback must be a function")
        if kind == "Hook.register":
            try:
                plain = [to_plain(what)] + ([to_plain(args[2])] if len(args) > 2 else [])
            except TypeError as exc:
                raise guest_error("INVALID_ARGUMENT", f"{kind}: {exc}") from None
            info: Any = self(kind, plain)
            handler = _Handler(str(info["hook_id"]), str(info["hook_point"]), fn, True, int(info["priority_value"]))
            self._insert(handler)
            return HookHandle(handler, self)
        handler_id = self(kind, [to_plain(what)])
        self._insert(_Handler(str(handler_id), str(what), fn, False, 0))
        return handler_id

    def drop(self, op: str, args: tuple[Any, ...]) -> PlainValue:
        value = args[0] if args else None
        if op == "Hook.unregister" and not isinstance(value, str):
            return False  # not a handle nor an id: nothing to unregister
        try:
            handler_id = to_plain(value)
        except TypeError as exc:
            raise guest_error("INVALID_ARGUMENT", f"{op}: {exc}") from None
        for handler in self._handlers:
            if handler.id == handler_id and (handler.hook or op != "Hook.unregister"):
                handler.active = False
                self._handlers.remove(handler)
                break
        return self(op, [handler_id])


def _callback_operation(self: Namespace, full_name: str, args: tuple[Any, ...]) -> Any:
    callbacks = self._call
    if not isinstance(callbacks, Callbacks):  # pragma: no cover - every Environment wraps its call
        raise guest_error("UNIMPLEMENTED", f"{full_name} needs callbacks, which this environment lacks")
    if full_name in ("Event.on", "Hook.register"):
        return callbacks.add(full_name, args)
    return callbacks.drop(full_name, args)


CALLBACK_OPS = frozenset({"Event.on", "Event.unsubscribe", "Hook.register", "Hook.unregister"})


def _operation(global_name: str, op: str) -> Callable[..., Any]:
    full_name = f"{global_name}.{op}"
    wrap = {"Session.get": "one", "Session.load": "one", "Session.suspend": "one", "Session.resume": "one",
            "Session.complete": "one", "Session.list": "list", "Artifact.store": "id",
            "Artifact.update": "id", "Artifact.storeFile": "id", "Artifact.get": "artifact",
            "Artifact.list": "artifacts", "Artifact.query": "artifacts", "Artifact.findByType": "artifacts",
            "Artifact.findByTag": "artifacts", "Artifact.search": "artifacts",
            "Session.getTimeline": "entries"}.get(full_name)  # fmt: skip

    def operation(self: Namespace, *args: Any, **options: Any) -> Any:
        if full_name == "Session.replay":
            return _replay(self, args, options)
        if full_name in CALLBACK_OPS:
            return _callback_operation(self, full_name, args)
        try:  # (each argument is a value of its own: its depth counts from it)
            plain = [to_plain(a) for a in args]
            if options:  # keyword arguments are the trailing options map: Session.create(name="x")
                plain.append(to_plain(options))
        except TypeError as exc:
            raise guest_error("INVALID_ARGUMENT", f"{full_name}: {exc}") from None
        result = self._call(full_name, plain)
        if wrap in PAGED and isinstance(result, dict) and isinstance(result.get("items"), list):
            return _page(wrap, result, self)
        if wrap == "id" and isinstance(result, dict):  # Artifact.store/update: scripts get the id string
            return result.get("id")
        if wrap == "artifact" and isinstance(result, dict):
            return ArtifactRecord(result, self)
        if wrap == "one" and isinstance(result, dict):
            return SessionRecord(result, self)
        return result

    operation.__name__ = op
    operation.__qualname__ = full_name
    return operation


PAGED = ("list", "artifacts", "entries")
"""The wraps of paged operations: their answer is `{items, next_cursor}` (a `Page` for the script)."""


class Page(list[Any]):
    """A page of a paged operation as scripts see it: the list of its items, with `next_cursor` (None
    when nothing remains) to pass back as `cursor` for the next page."""

    __slots__ = ("next_cursor",)

    def __init__(self, items: list[Any], next_cursor: str | None) -> None:
        super().__init__(items)
        self.next_cursor = next_cursor


def _page(wrap: str, page: dict[str, Any], namespace: Namespace) -> Page:
    items: list[Any] = page["items"]
    if wrap == "artifacts":
        items = [ArtifactRecord(r, namespace) if isinstance(r, dict) else r for r in items]
    elif wrap == "list":
        items = [SessionRecord(r, namespace) if isinstance(r, dict) else r for r in items]
    cursor = page.get("next_cursor")
    return Page(items, cursor if isinstance(cursor, str) else None)


def _replay(self: Namespace, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
    """Session.replay(id, {speed, on_progress, on_hook}): the callbacks run here, in the calling
    script, as the replay advances (the worker waits for new replay timeline entries between calls)."""
    opts: dict[str, Any] = dict(args[1]) if len(args) > 1 and isinstance(args[1], dict) else {}
    opts.update(options)
    on_progress = opts.pop("on_progress", None)
    on_hook = opts.pop("on_hook", None)
    replay_id = self._call("Session.replay", [to_plain(args[0]) if args else None, to_plain(opts)])
    if on_progress is None and on_hook is None:
        return replay_id
    after = ""
    while True:
        batch: Any = self._call("Session.awaitReplay", [replay_id, after])
        for entry in batch["entries"]:
            after = entry["id"]
            if entry["type"] == "replay.progress":
                if on_progress is not None:
                    on_progress(entry["data"]["progress"])
            elif entry["hook"] and on_hook is not None:
                on_hook({"hook_point": entry["type"], "session_id": replay_id, "job_id": entry["job_id"],
                         "data": entry["data"], "timestamp": entry["timestamp"],
                         "timestamp_unix": entry["timestamp_unix"]})  # fmt: skip
        if batch["finished"]:
            return replay_id


def _namespace_class(global_name: str) -> type[Namespace]:
    members: dict[str, Any] = {op: _operation(global_name, op) for op in GLOBAL_OPS[global_name]}
    for alias, op in aliases(global_name).items():
        members[alias] = members[op]
    return type(global_name, (Namespace,), {"__slots__": (), "_global_name": global_name, **members})


NAMESPACES: dict[str, type[Namespace]] = {name: _namespace_class(name) for name in GLOBAL_OPS}


class ArtifactRecord(dict[str, Any]):
    """An artifact as scripts see it: a dict whose fields are also attributes. Large content is left
    out by the worker and fetched on first access to `content` (`a.content` or `a["content"]`)."""

    __slots__ = ("_artifact",)

    def __init__(self, record: Mapping[str, Any], artifact: Any) -> None:
        super().__init__(record)
        object.__setattr__(self, "_artifact", artifact)

    def __missing__(self, key: str) -> Any:
        if key != "content":
            raise KeyError(key)
        content = self._artifact.getContent(self.get("session_id"), self.get("id"), self.get("version"))
        self["content"] = content
        return content

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"artifact has no field {name!r}") from None


class SessionRecord(dict[str, Any]):
    """A session as scripts see it: a dict whose fields are also attributes, plus the spec's methods."""

    __slots__ = ("_session",)

    def __init__(self, record: Mapping[str, Any], session: Any) -> None:
        super().__init__(record)
        object.__setattr__(self, "_session", session)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"session has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def suspend(self) -> Any:
        return self._session.suspend(self.get("id"))

    def resume(self) -> Any:
        return self._session.resume(self.get("id"))

    def complete(self) -> Any:
        return self._session.complete(self.get("id"))

    def save(self) -> Any:
        return self._session.save(self.get("id"))

    def hasTag(self, tag: str) -> bool:
        return tag in (self.get("tags") or [])

    # addTag/removeTag start from the session's current tags (not this object's possibly stale copy),
    # and append, as in the Lua and JS engines.
    def addTag(self, tag: str) -> Any:
        current = list(self._session.getTags(self.get("id")) or [])
        self["tags"] = current if tag in current else self._session.setTags(self.get("id"), [*current, tag])
        return self["tags"]

    def removeTag(self, tag: str) -> Any:
        current = list(self._session.getTags(self.get("id")) or [])
        self["tags"] = self._session.setTags(self.get("id"), [t for t in current if t != tag])
        return self["tags"]

    has_tag = hasTag
    add_tag = addTag
    remove_tag = removeTag


def _script_time(clock: ScriptClock) -> object:
    """The `time` module whose clocks read through the job's `ScriptClock` (recorded, and given back
    in a replay; its wall clock shifted to the recorded job's start in a replay)."""
    names = {a: getattr(time, a) for a in MODULE_ALLOWLIST["time"]}

    def gmtime(secs: float | None = None) -> time.struct_time:
        return time.gmtime(clock.wall() if secs is None else secs)

    def localtime(secs: float | None = None) -> time.struct_time:
        return time.localtime(clock.wall() if secs is None else secs)

    names.update(
        time=clock.wall,
        time_ns=lambda: int(clock.wall() * 1e9),
        monotonic=clock.monotonic,
        perf_counter=clock.perf_counter,
        process_time=clock.process_time,
        gmtime=gmtime,
        localtime=localtime,
    )
    return types.SimpleNamespace(**names)


def _script_datetime(clock: ScriptClock) -> object:
    """A `datetime` module whose now()/today() read the job's `ScriptClock`. The C module's own
    today() imports `time` through the sandbox's import guard, which refuses it, so these are
    needed even without a replay."""

    class date(datetime.date):
        @classmethod
        def today(cls) -> Any:
            return cls.fromtimestamp(clock.wall())

    class datetime_(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Any:
            return cls.fromtimestamp(clock.wall(), tz)

        @classmethod
        def today(cls) -> Any:
            return cls.now()

        @classmethod
        def utcnow(cls) -> Any:
            return cls.fromtimestamp(clock.wall(), datetime.UTC).replace(tzinfo=None)

    datetime_.__name__ = datetime_.__qualname__ = "datetime"
    names = {a: getattr(datetime, a) for a in MODULE_ALLOWLIST["datetime"]}
    names.update(date=date, datetime=datetime_)
    return types.SimpleNamespace(**names)


# ------------------------------------------------------------------ the job's files

_WHENCE_NAMES = {0: "set", 1: "cur", 2: "end"}


class ScriptFile:
    """What `open()` gives a script: a file in the job's root (its scratch directory, seen as `/`),
    read and written through `File.*` (sandbox/scratch_files.py, which confines and bounds it).
    Text mode reads and writes UTF-8 (no newline translation); binary mode bytes."""

    __slots__ = ("_call", "_decoder", "_id", "_text", "mode", "name")

    def __init__(self, call: Callable[[str, list[PlainValue]], PlainValue], path: object, mode: object) -> None:
        if not isinstance(mode, str) or not mode or len(set(mode)) != len(mode) or set(mode) - set("rwaxbt+"):
            raise guest_error("INVALID_ARGUMENT", f"open: invalid mode {mode!r}")
        base = "".join(c for c in mode if c in "rwax")
        if len(base) != 1 or ("b" in mode and "t" in mode):
            raise guest_error("INVALID_ARGUMENT", f"open: invalid mode {mode!r}")
        self._call = call
        self._text = "b" not in mode
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.name = path
        self.mode = mode
        self._id: PlainValue = call("File.open", [to_plain(path), base + ("+" if "+" in mode else "")])

    @property
    def closed(self) -> bool:
        return self._id is None

    def _handle(self) -> PlainValue:
        if self._id is None:
            raise guest_error("INVALID_ARGUMENT", "I/O operation on a closed file")
        return self._id

    def _out(self, data: PlainValue) -> Any:
        raw = data if isinstance(data, bytes) else (b"" if data is None else str(data).encode())
        return self._decoder.decode(raw) if self._text else raw

    def read(self, size: int | None = -1) -> Any:
        handle = self._handle()
        if size is None or size < 0:
            return self._out(self._call("File.read", [handle, "a"]))
        if not self._text:
            return self._out(self._call("File.read", [handle, size]))
        text = ""
        while len(text) < size:
            data = self._call("File.read", [handle, size - len(text)])
            if data is None:
                break
            text += self._out(data)
        return text

    def readline(self, size: int | None = -1) -> Any:
        line = self._call("File.read", [self._handle(), "L"])
        out = self._out(line)
        if size is not None and size >= 0 and len(out) > size:  # the rest stays for the next read
            self.seek(-len(out[size:].encode() if self._text else out[size:]), 1)
            out = out[:size]
        return out

    def readlines(self, hint: int = -1) -> list[Any]:
        return list(self)

    def __iter__(self) -> ScriptFile:
        return self

    def __next__(self) -> Any:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def write(self, data: object) -> int:
        handle = self._handle()
        if self._text and not isinstance(data, str):
            raise guest_error("INVALID_ARGUMENT", f"write() argument must be str, not {type(data).__name__}")
        if not self._text and not isinstance(data, (bytes, bytearray)):
            raise guest_error("INVALID_ARGUMENT", f"a bytes-like object is required, not {type(data).__name__}")
        plain = to_plain(data)
        self._call("File.write", [handle, plain])
        return len(cast(str | bytes, plain))

    def writelines(self, lines: Iterable[object]) -> None:
        for line in lines:
            self.write(line)

    def seek(self, offset: int, whence: int = 0) -> Any:
        if whence not in _WHENCE_NAMES:
            raise guest_error("INVALID_ARGUMENT", f"seek: invalid whence ({whence!r}, should be 0, 1 or 2)")
        self._decoder.reset()
        return self._call("File.seek", [self._handle(), _WHENCE_NAMES[whence], offset])

    def tell(self) -> Any:
        return self._call("File.seek", [self._handle(), "cur", 0])

    def flush(self) -> None:
        self._call("File.flush", [self._handle()])

    def close(self) -> None:
        if self._id is not None:
            handle, self._id = self._id, None
            self._call("File.close", [handle])

    def __enter__(self) -> ScriptFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<file {self.name!r} mode {self.mode!r}{' closed' if self._id is None else ''}>"


ScriptFile.__name__ = ScriptFile.__qualname__ = "file"
OS_PATH_NAMES = ("join", "basename", "dirname", "split", "splitext", "normpath", "isabs", "sep")
OS_NAMES = ("remove", "unlink", "rename", "replace", "listdir", "path", "sep")


def _os_module(call: Callable[[str, list[PlainValue]], PlainValue]) -> tuple[GuestModule, GuestModule]:
    """`import os` in a script: only removing, renaming and listing the job's own files, and
    `os.path`'s string functions plus `exists` (no process, environment or host access)."""

    def exists(path: object) -> bool:
        try:
            return bool(call("File.exists", [to_plain(path)]))
        except GuestError as exc:
            if exc.code == "PERMISSION_DENIED":
                raise
            return False

    path_members: dict[str, Any] = {name: getattr(posixpath, name) for name in OS_PATH_NAMES}
    path_members["exists"] = exists
    path_module = GuestModule("os.path", path_members)
    members: dict[str, Any] = {
        "remove": lambda path: call("File.remove", [to_plain(path)]) and None,
        "rename": lambda old, new: call("File.rename", [to_plain(old), to_plain(new)]) and None,
        "listdir": lambda path="/": call("File.list", [to_plain(path)]),
        "path": path_module,
        "sep": "/",
    }
    members["unlink"] = members["remove"]
    members["replace"] = members["rename"]
    return GuestModule("os", members), path_module


class Environment:
    """Builds one job's globals. `call` performs a global op (counting, limits and errors are the
    runner's business); `write` prints; `recheck` re-raises a limit the script tried to catch."""

    def __init__(
        self,
        call: Callable[[str, list[PlainValue]], PlainValue],
        write: Callable[[str], None],
        recheck: Callable[[], None],
        inputs: Mapping[str, PlainValue],
        random_seed: int | None = None,
        clock: ScriptClock | None = None,
    ) -> None:
        self._random_seed = random_seed
        self._clock = clock or ScriptClock()
        self._datetime: GuestModule | None = None
        self._time: GuestModule | None = None
        self._call = Callbacks(call)
        self._write = write
        self._random: GuestModule | None = None
        self._os: tuple[GuestModule, GuestModule] | None = None
        self._script_classes: weakref.WeakSet[type] = weakref.WeakSet()
        self.globals = self._build(recheck, inputs)

    def _build(self, recheck: Callable[[], None], inputs: Mapping[str, PlainValue]) -> dict[str, Any]:
        builtins = dict(SAFE_BUILTINS)
        builtins.update(
            __import__=self._import,
            __metaclass__=self._make_class,
            _getattr_=guarded_getattr,
            _getitem_=guarded_getitem,
            _write_=self._guard_write,
            _getiter_=iter,
            _iter_unpack_sequence_=guarded_iter_unpack_sequence,
            _unpack_sequence_=guarded_unpack_sequence,
            _inplacevar_=inplace_var,
            _apply_=apply_call,
            _print_=self._printer,
            _limit_check_=recheck,
            setattr=self._setattr,
            delattr=self._delattr,
            open=self._open,
        )
        env: dict[str, Any] = {"__builtins__": builtins, "__name__": "script", "INPUT": to_plain(dict(inputs))}
        for name, namespace in NAMESPACES.items():
            env[name] = namespace(self._call)
        return env

    def _open(self, file: object, mode: object = "r", *args: object, **options: object) -> ScriptFile:
        """open(path, mode="r"): a file in the job's root; encoding utf-8 only, no other options."""
        if args or set(options) - {"encoding", "newline"} or options.get("encoding", "utf-8") not in ("utf-8", "utf8"):
            raise guest_error("INVALID_ARGUMENT", "open: only open(path, mode) is available (text is UTF-8)")
        return ScriptFile(self._call, file, mode)

    def _printer(self, _getattr: object = None) -> _Printer:
        return _Printer(self._write)

    def _import(
        self, name: str, globals: object = None, locals: object = None, fromlist: object = (), level: int = 0
    ) -> GuestModule:
        if level == 0 and name in ("os", "os.path"):
            if self._os is None:
                self._os = _os_module(self._call)
            return self._os[1] if name == "os.path" and fromlist else self._os[0]
        if level != 0 or name not in MODULE_ALLOWLIST:
            allowed = ", ".join(sorted([*MODULE_ALLOWLIST, "os"]))
            raise ImportError(f"module {name!r} is not available in the sandbox (available: {allowed})")
        if name == "random":  # a generator per job, never the process-wide one
            if self._random is None:
                self._random = _stand_in("random", random.Random(self._random_seed))
            return self._random
        if name == "datetime":  # now()/today() from the job's clock, per job
            if self._datetime is None:
                self._datetime = _stand_in("datetime", _script_datetime(self._clock))
            return self._datetime
        if name == "time":
            if self._time is None:
                self._time = _stand_in("time", _script_time(self._clock))
            return self._time
        return shared_module(name)

    def _make_class(self, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
        cls = type(name, bases, namespace)
        self._script_classes.add(cls)
        return cls

    def _guard_write(self, obj: Any) -> Any:
        """Scripts may change containers and their own classes and instances, nothing else."""
        if isinstance(obj, _WRITABLE_TYPES) or type(obj) in self._script_classes:
            return obj
        if isinstance(obj, type) and obj in self._script_classes:
            return obj
        return _ReadOnly(obj)

    def _setattr(self, obj: Any, name: str, value: Any) -> None:
        setattr(self._guard_write(obj), _check_name(name), value)

    def _delattr(self, obj: Any, name: str) -> None:
        delattr(self._guard_write(obj), _check_name(name))


class _ReadOnly:
    """What `_write_` hands back for an object the script may not change: every write is refused."""

    __slots__ = ("_kind",)
    _kind: str

    def __init__(self, obj: object) -> None:
        object.__setattr__(self, "_kind", type(obj).__name__)

    def _refuse(self, *args: object) -> NoReturn:
        raise TypeError(f"a {self._kind} object cannot be changed in the sandbox")

    __setattr__ = __delattr__ = __setitem__ = __delitem__ = _refuse


def _unavailable(name: str) -> Callable[..., NoReturn]:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise NameError(f"{name}() is not available in the sandbox")

    return refuse


def _safe_builtins() -> dict[str, Any]:
    names = dict(safe_builtins)
    for gone in ("_getattr_", "setattr", "delattr"):
        names.pop(gone, None)
    extra: Iterable[Callable[..., Any] | type] = (
        all, any, ascii, bin, bytearray, bytes, classmethod, dict, enumerate, filter, frozenset, iter, list,
        map, max, min, next, property, reversed, set, sorted, staticmethod, sum, tuple, zip,
    )  # fmt: skip
    names.update({f.__name__: f for f in extra})
    names.update(RecursionError=RecursionError, StopIteration=StopIteration, ZeroDivisionError=ZeroDivisionError)
    names.update(getattr=guarded_getattr, hasattr=guarded_hasattr, ScriptpoolError=GuestError)
    names.update({cls.__name__: cls for cls in GUEST_ERRORS.values()})
    for name in ("exec", "eval", "compile", "globals", "locals", "vars", "dir", "input", "breakpoint",
                 "type", "object", "super", "memoryview", "help", "exit", "quit"):  # fmt: skip
        names[name] = _unavailable(name)
    return names


SAFE_BUILTINS = _safe_builtins()
