"""Redis saying "not now" (`LOADING` after a restart, `BUSY` running a script, or out of reach) is
UNAVAILABLE with a message a person can act on, through the one mapping (`coordinator/status.py`),
however the error reached the coordinator (redis-py's classes, or the lean client's plain replies)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scriptpool.coordinator.status import REDIS_BUSY, REDIS_LOADING, REDIS_UNREACHABLE, abort_for


class Aborted(Exception):
    pass


class Context:
    """What `abort_for` uses of a grpc.ServicerContext: `abort` raises, as grpcio's does."""

    def abort(self, code: grpc.StatusCode, message: str) -> Any:
        raise Aborted(code, message)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(Aborted) as aborted:
        abort_for(Context(), exc)  # type: ignore[arg-type]
    code, message = aborted.value.args
    return code, message


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (BusyLoadingError("Redis is loading the dataset in memory"), REDIS_LOADING),  # redis-py's class
        (ResponseError("LOADING Redis is loading the dataset in memory"), REDIS_LOADING),  # lean client, scripts
        (
            ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."),
            REDIS_BUSY,
        ),
        (RedisConnectionError("Connection refused"), REDIS_UNREACHABLE),
        (RedisTimeoutError("Timeout reading from socket"), REDIS_UNREACHABLE),
    ],
)
def test_redis_not_ready_is_unavailable_with_an_actionable_message(exc: BaseException, message: str) -> None:
    assert status_of(exc) == (grpc.StatusCode.UNAVAILABLE, message)
    assert "retry" in message


@pytest.mark.parametrize(
    "exc",
    [ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), ResponseError("BUSYKEY x")],
)
def test_other_redis_errors_stay_internal(exc: BaseException) -> None:
    code, message = status_of(exc)
    assert code is grpc.StatusCode.INTERNAL and "ref" in message
