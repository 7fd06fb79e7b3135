"""Stand-in hosts for `bench scale` and the multi-host test: network namespaces (`ip netns`), each joined to this host's
namespace by a veth pair with its own /30 network. A process started in one (`ip netns exec`) sees
only its own address and the host side's, like a separate machine on a LAN; the host side's address
is where it reaches Redis and the coordinator.

Creating them needs CAP_SYS_ADMIN and CAP_NET_ADMIN; where the machine cannot, `make_hosts` raises
`NamespacesUnavailable` with the command's own error (a test that needs them fails with it, and
`bench scale` reports it instead of the figure).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from scriptpool.errors import Unavailable


class NamespacesUnavailable(Unavailable):
    """This machine cannot make network-namespace hosts (the message is `ip`'s own error)."""


@dataclass(frozen=True)
class NetnsHost:
    name: str
    """The namespace's name (`ip netns exec NAME ...`)."""
    address: str
    """This host's own address, inside the namespace."""
    gateway: str
    """The host side's address on the same link: where this host reaches services on the real host."""

    def command(self, args: list[str]) -> list[str]:
        """`args`, run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *args]


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise NamespacesUnavailable(
            f"cannot make a network-namespace host here: `ip {' '.join(args)}` failed: {result.stderr.strip()}"
        )


def make_hosts(count: int) -> list[NetnsHost]:
    """`count` namespace hosts; `remove_hosts` removes them (with their veth pairs). On failure the
    ones already made are removed and `NamespacesUnavailable` says why."""
    tag = f"{os.getpid() % 100000}"
    made: list[NetnsHost] = []
    try:
        for index in range(count):
            name = f"sp{tag}h{index}"
            outside, inside = f"sp{tag}o{index}", f"sp{tag}i{index}"  # interface names: at most 15 characters
            subnet = f"10.{200 + index}.{os.getpid() % 250}"
            _ip("netns", "add", name)
            made.append(NetnsHost(name, f"{subnet}.2", f"{subnet}.1"))
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", name)
            _ip("addr", "add", f"{subnet}.1/30", "dev", outside)
            _ip("link", "set", outside, "up")
            _ip("-n", name, "addr", "add", f"{subnet}.2/30", "dev", inside)
            _ip("-n", name, "link", "set", inside, "up")
            _ip("-n", name, "link", "set", "lo", "up")
    except BaseException:
        remove_hosts(made)
        raise
    return made


def remove_hosts(made: list[NetnsHost]) -> None:
    for host in made:
        subprocess.run(["ip", "netns", "del", host.name], capture_output=True, timeout=30)  # takes its veth too


@contextmanager
def hosts(count: int) -> Iterator[list[NetnsHost]]:
    """`count` namespace hosts, removed on exit."""
    made = make_hosts(count)
    try:
        yield made
    finally:
        remove_hosts(made)
