"""`proto/scriptpool/core/rq_serializers.py` answers exactly as RQ's own `resolve_serializer`, errors included,
and its installation reaches the RQ modules that build per-job objects."""

from __future__ import annotations

from typing import Any

import pytest
import rq.job
import rq.registry
import rq.results
import rq.serializers
from rq.serializers import DefaultSerializer, JSONSerializer

from scriptpool.core import rq_serializers

_rqs: Any = rq.serializers.resolve_serializer


class _InstanceSerializer:
    def dumps(self, value: Any) -> bytes:
        return repr(value).encode()

    def loads(self, raw: bytes) -> Any:
        return raw.decode()


@pytest.mark.parametrize(
    "serializer",
    [None, DefaultSerializer, JSONSerializer, _InstanceSerializer(), "rq.serializers.JSONSerializer", "json"],
)
def test_accepted_serializers_resolve_as_rq_resolves_them_every_time(serializer: object) -> None:
    expected = _rqs(serializer)
    for _ in range(3):  # first time through RQ's check, then remembered
        assert rq_serializers.resolve_serializer(serializer) is expected


@pytest.mark.parametrize("serializer", [object(), 42, "rq.serializers.NoSuchSerializer"])
def test_rejected_serializers_raise_rqs_error_every_time(serializer: object) -> None:
    with pytest.raises(Exception) as theirs:
        _rqs(serializer)
    for _ in range(2):
        with pytest.raises(type(theirs.value)):
            rq_serializers.resolve_serializer(serializer)


def test_a_remembered_serializer_that_loses_its_methods_is_checked_again() -> None:
    class Shifty:
        @staticmethod
        def dumps(value: Any) -> bytes:
            return b""

        @staticmethod
        def loads(raw: bytes) -> Any:
            return None

    assert rq_serializers.resolve_serializer(Shifty) is Shifty
    del Shifty.loads
    with pytest.raises(NotImplementedError):
        rq_serializers.resolve_serializer(Shifty)


def test_install_points_rqs_job_result_and_registries_at_it() -> None:
    before = {module: module.resolve_serializer for module in rq_serializers.MODULES_THAT_RESOLVE}
    try:
        rq_serializers.install()
        assert [m.resolve_serializer for m in (rq.job, rq.registry, rq.results)] == [
            rq_serializers.resolve_serializer
        ] * 3
    finally:
        for module, original in before.items():
            module.resolve_serializer = original  # type: ignore[attr-defined]
