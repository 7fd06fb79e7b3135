"""The strict-jail policy (proto/scriptpool/sandbox/jail/policy.py): every layer is required unless the
operator names it; names are checked; the refusal says what is missing, why, and what to do."""

from __future__ import annotations

import pytest

from scriptpool.errors import InvalidArgument
from scriptpool.sandbox.jail import LAYERS, JailIncomplete, JailPolicy, JailReport
from scriptpool.sandbox.jail.policy import HOW_TO_PROVIDE


def _report(**unavailable: str) -> JailReport:
    return JailReport(applied=["seccomp"], unavailable={k.replace("_", "-"): v for k, v in unavailable.items()})


def test_every_layer_the_jail_reports_has_a_hint_and_is_required_by_default() -> None:
    assert set(LAYERS) == set(HOW_TO_PROVIDE)
    assert {"network-namespace", "landlock", "seccomp", "rlimits", "no-new-privs"} <= set(LAYERS)
    report = _report(landlock="ENOSYS")
    assert JailPolicy().missing_required(report) == {"landlock": "ENOSYS"}
    with pytest.raises(JailIncomplete):
        JailPolicy().check(report)


def test_a_layer_reported_with_its_detail_is_matched_by_its_short_name() -> None:
    report = JailReport(unavailable={"rlimits(cpu,as)": "EPERM"})
    policy = JailPolicy.allowing(["rlimits"])
    assert policy.missing_required(report) == {} and policy.missing_allowed(report) == {"rlimits": "EPERM"}
    policy.check(report)


def test_an_unknown_missing_layer_is_required_and_cannot_be_allowed() -> None:
    report = _report(scratch_directory="ENOSPC")
    with pytest.raises(JailIncomplete) as caught:
        JailPolicy.allowing(LAYERS).check(report)
    assert "scratch-directory (ENOSPC)" in caught.value.message and "--allow-missing-layer" not in caught.value.message
    with pytest.raises(InvalidArgument):
        JailPolicy.allowing(["scratch-directory"])


def test_the_refusal_names_every_missing_layer_its_reason_a_hint_and_the_flag() -> None:
    with pytest.raises(JailIncomplete) as caught:
        JailPolicy.allowing(["seccomp"]).check(_report(landlock="ENOSYS", network_namespace="EPERM", seccomp="EINVAL"))
    message = caught.value.message
    assert "landlock (ENOSYS)" in message and "network-namespace (EPERM)" in message
    assert "seccomp (EINVAL)" not in message
    assert HOW_TO_PROVIDE["landlock"] in message and HOW_TO_PROVIDE["network-namespace"] in message
    assert "--allow-missing-layer landlock --allow-missing-layer network-namespace" in message
    assert caught.value.code == "FAILED_PRECONDITION" and "\n" not in message


@pytest.mark.parametrize("names", [["net"], [""], ["Seccomp"], ["seccomp", "landlock(abi=7)"]])
def test_unknown_names_are_refused_with_the_known_ones(names: list[str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        JailPolicy.allowing(names)
    assert "unknown sandbox layer" in caught.value.message and ", ".join(LAYERS) in caught.value.message


def test_the_variable_ignores_empty_items_and_merges_with_flags() -> None:
    assert JailPolicy.from_variable("").allowed_missing == frozenset()
    policy = JailPolicy.from_variable(" landlock, ,seccomp,").merged(JailPolicy.allowing(["rlimits"]))
    assert policy.allowed_missing == {"landlock", "seccomp", "rlimits"}
    with pytest.raises(InvalidArgument) as caught:
        JailPolicy.from_variable("landlock,nope")
    assert caught.value.message.startswith("SCRIPTPOOL_ALLOW_MISSING_LAYERS:")
