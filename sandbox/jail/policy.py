"""Which jail layers a worker requires before it runs any job (strict by default).

Every layer the jail knows is required. An operator who accepts weaker isolation on a host that
cannot provide a layer says so by name (`--allow-missing-layer NAME`, or
`SCRIPTPOOL_ALLOW_MISSING_LAYERS=a,b`); a worker that finds a required layer missing refuses to
start, naming the layer, why it is missing and how to provide it (docs/THREAT_MODEL.md, "Strict
jail"). `scriptpool doctor` applies the same policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scriptpool.errors import FailedPrecondition, InvalidArgument
from scriptpool.sandbox.jail._apply import (
    CAPABILITIES,
    ENVIRONMENT,
    FDS,
    LANDLOCK,
    NETNS,
    NO_NEW_PRIVS,
    RLIMITS,
    SECCOMP,
    JailReport,
)
from scriptpool.sandbox.jail._probe import probe_host

ALLOW_MISSING_VARIABLE = "SCRIPTPOOL_ALLOW_MISSING_LAYERS"
"""Comma-separated layer names a worker may run without (the environment form of the flag)."""


def layer_name(reported: str) -> str:
    """A layer's short name: what the report says, without its detail (`rlimits(cpu,...)` -> `rlimits`)."""
    return reported.split("(", 1)[0]


HOW_TO_PROVIDE: Mapping[str, str] = {
    layer_name(ENVIRONMENT): "nothing on the host can remove it: a failure is a scriptpool bug, please report it",
    layer_name(FDS): "nothing on the host can remove it: a failure is a scriptpool bug, please report it",
    layer_name(NETNS): "run the worker as root with CAP_SYS_ADMIN (a container needs --cap-add SYS_ADMIN or a "
    "seccomp/AppArmor profile that allows unshare(CLONE_NEWNET))",
    layer_name(RLIMITS): "let the worker set resource limits (no hard RLIMIT_NPROC/RLIMIT_CORE cap below what "
    "it asks for; a container runtime's ulimits must allow lowering them)",
    layer_name(NO_NEW_PRIVS): "use Linux 3.5 or newer, and a container profile that allows prctl(PR_SET_NO_NEW_PRIVS)",
    layer_name(LANDLOCK): "use Linux 5.13 or newer with Landlock enabled ('landlock' in "
    "/sys/kernel/security/lsm, or boot with lsm=...,landlock) and a container seccomp profile that "
    "allows the landlock_* system calls",
    layer_name(CAPABILITIES): "let the worker call capset (a container seccomp profile that allows it) on x86_64 "
    "or aarch64",
    layer_name(SECCOMP): "use a Linux kernel with seccomp filters (CONFIG_SECCOMP_FILTER) on x86_64 or aarch64, "
    "and a container profile that allows seccomp()",
}
"""Layer -> what the operator can do so the host provides it."""

LAYERS: tuple[str, ...] = tuple(HOW_TO_PROVIDE)
"""Every layer a worker requires unless the operator allows it to be missing, in the jail's order."""


@dataclass(frozen=True, kw_only=True, slots=True)
class JailPolicy:
    """The layers a worker may run without; every other layer is required."""

    allowed_missing: frozenset[str] = frozenset()
    """Short layer names (`LAYERS`) the operator explicitly accepts as missing."""

    @classmethod
    def allowing(cls, names: Iterable[str], *, source: str = "--allow-missing-layer") -> JailPolicy:
        """The policy for these names; an unknown name is an `InvalidArgument` naming the known ones."""
        allowed = frozenset(name.strip() for name in names)
        unknown = sorted(allowed - set(LAYERS))
        if unknown:
            raise InvalidArgument(f"{source}: unknown sandbox layer {unknown[0]!r}; known layers: {', '.join(LAYERS)}")
        return cls(allowed_missing=allowed)

    @classmethod
    def from_variable(cls, raw: str) -> JailPolicy:
        """`a,b` (empty items ignored, so an empty or unset variable allows nothing)."""
        return cls.allowing([name for name in raw.split(",") if name.strip()], source=ALLOW_MISSING_VARIABLE)

    def merged(self, other: JailPolicy) -> JailPolicy:
        return JailPolicy(allowed_missing=self.allowed_missing | other.allowed_missing)

    def missing_required(self, report: JailReport) -> dict[str, str]:
        """Short layer name -> why, for each missing layer this policy requires (any layer it does not
        know is required: the jail reported it, so a job would run without it)."""
        missing = {layer_name(name): why for name, why in report.unavailable.items()}
        return {name: why for name, why in missing.items() if name not in self.allowed_missing}

    def missing_allowed(self, report: JailReport) -> dict[str, str]:
        """Short layer name -> why, for each missing layer the operator allowed."""
        missing = {layer_name(name): why for name, why in report.unavailable.items()}
        return {name: why for name, why in missing.items() if name in self.allowed_missing}

    def check(self, report: JailReport) -> None:
        """Raise `JailIncomplete` when a required layer is missing from `report`."""
        missing = self.missing_required(report)
        if missing:
            raise JailIncomplete(missing)


class JailIncomplete(FailedPrecondition):
    """A required jail layer is missing on this host: the worker does not start."""

    def __init__(self, missing: Mapping[str, str]) -> None:
        self.missing = dict(missing)
        names = list(self.missing)
        reasons = "; ".join(f"{name} ({why})" for name, why in self.missing.items())
        provide = "; ".join(f"{name}: {how_to_provide(name)}" for name in names)
        allow = " ".join(f"--allow-missing-layer {name}" for name in names if name in LAYERS)
        text = f"required sandbox layer{'s' if len(names) > 1 else ''} unavailable on this host: {reasons}. "
        text += f"To provide {'them' if len(names) > 1 else 'it'}: {provide}."
        if allow:
            text += f" To run with weaker isolation instead, pass {allow} (or {ALLOW_MISSING_VARIABLE}=...)."
        super().__init__(text)


def how_to_provide(layer: str) -> str:
    return HOW_TO_PROVIDE.get(layer, "the jail could not set it up on this host: see `scriptpool doctor`")


def require_jail(policy: JailPolicy) -> JailReport:
    """Probe this host's jail (`probe_host`) and raise `JailIncomplete` if a required layer is missing."""
    report = probe_host()
    policy.check(report)
    return report
