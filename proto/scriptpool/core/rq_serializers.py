"""A drop-in for RQ's `resolve_serializer` that remembers the serializers it has accepted, installed
in a worker process by `install()`.

RQ resolves a serializer in every `Job`, `Result` and registry it builds (a worker builds ~5 per
job: the started and finished registries, the result, ...), and each resolution checks the
serializer with `isinstance()` against a runtime `Protocol`, which Python answers by walking the
protocol's attributes every time (~6 % of a worker's CPU per trivial job). The answer for one
object cannot change while it keeps its `dumps` and `loads`, so an object that passed once is
returned at once afterwards. Anything else (None, a dotted path, an object not seen before) goes
to RQ's own function, so results and errors are RQ's (`tests/unit/test_rq_serializers.py`).

Also `pass_default_serializer_as_none`, which both the coordinator's queue and the worker apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import rq.serializers

from scriptpool.core import rq_internals
from scriptpool.core.rq_internals import MODULES_THAT_RESOLVE

if TYPE_CHECKING:
    from rq import Queue, SimpleWorker

_rqs_resolve = rq_internals.RQ_RESOLVE_SERIALIZER

_accepted: dict[int, tuple[Any, Any, Any]] = {}
"""id(serializer) -> (serializer, its dumps, its loads) when RQ accepted it; the strong reference
keeps the id from being reused by another object."""


def resolve_serializer(serializer: Any = None) -> Any:
    if serializer and not isinstance(serializer, str):
        seen = _accepted.get(id(serializer))
        if (
            seen is not None
            and seen[0] is serializer
            and getattr(serializer, "dumps", None) == seen[1]
            and getattr(serializer, "loads", None) == seen[2]
        ):
            return serializer
    resolved = _rqs_resolve(serializer)
    if serializer is resolved and not isinstance(serializer, str):
        _accepted[id(serializer)] = (serializer, serializer.dumps, serializer.loads)
    return resolved


def install() -> None:
    """Make RQ's `Job`, `Result` and registries resolve through `resolve_serializer`."""
    rq_internals.install_serializer_resolver(resolve_serializer)


def pass_default_serializer_as_none(owner: SimpleWorker | Queue) -> None:
    """RQ resolves the serializer it is given in every Job, Result and registry it builds, by an
    isinstance() check against a runtime Protocol (~5 % of a worker's or a submitter's CPU per
    job). None resolves to the same default serializer at once, so a worker or queue holding the
    default passes None on."""
    if owner.serializer is rq.serializers.DefaultSerializer:
        owner.serializer = None  # type: ignore[assignment]


__all__ = ["MODULES_THAT_RESOLVE", "install", "pass_default_serializer_as_none", "resolve_serializer"]
