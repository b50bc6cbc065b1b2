"""Shaped links for the lab: each site behind its own rate-limited uplink.

With ``fleet lab up --link 10mbit`` every lab site lives in its own network
namespace, joined to the controller's (root) namespace by a veth pair. Both
ends are shaped with a token bucket (``tbf``): the controller's end limits
what the controller sends to the site, the site's end what the site sends
back (log export, mostly), so the site's uplink is RATE each way. Where the
kernel has ``sch_netem`` a one-way delay sits in front of each bucket; where
it does not, the link has no added delay and the lab status says so.

Everything here is named from a hash of the lab directory (``ef`` + 6 hex),
so `lab down` finds what this lab made by name, even after a ``kill -9`` of
`lab up` left things out of ``net.json``: namespaces ``<prefix>-<i>``, veth
ends ``<prefix>h<i>`` (controller) and ``<prefix>s<i>`` (site), all within
IFNAMSIZ. Addresses come from the benchmarking range 198.18.0.0/15, one /30
per site inside a /24 picked from the same hash (the next free one when
another lab holds it), and only ever on these veth pairs. Each piece is
recorded in ``net.json`` before it is created.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet_runtime.layout import atomic_write_json, read_json

from fleet.errors import ConfigError, FleetError, UsageError

BENCH_NET = ipaddress.ip_network("198.18.0.0/15")
BLOCKS = BENCH_NET.num_addresses // 256  # one /24 per lab
MAX_SITES = 64  # one /30 per site in the lab's /24
DEFAULT_DELAY_MS = 10.0
SSH_PORT_BASE = 2200
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(kbit|mbit|gbit)$")
_UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}


def parse_rate(text: str) -> int:
    """'10mbit' -> 10_000_000 bits/s; bad input is a UsageError saying what is accepted."""
    m = _RATE.match(text.strip().lower())
    bits = int(float(m.group(1)) * _UNITS[m.group(2)]) if m else 0
    if bits < 8_000:
        raise UsageError(f"--link '{text}' is not a rate",
                         fix="give bits per second as NUMBER kbit|mbit|gbit, e.g. --link 10mbit")
    return bits


def prefix_for(lab_dir: Path) -> str:
    return "ef" + hashlib.sha256(str(lab_dir.resolve()).encode()).hexdigest()[:6]


def missing_tools() -> str | None:
    """Why a shaped link cannot be built here, or None."""
    if os.geteuid() != 0:
        return "--link needs root (network namespaces and tc); run as root or drop --link"
    lacking = [tool for tool in ("ip", "tc") if not _which(tool)]
    if lacking:
        return (f"--link needs {' and '.join(lacking)} (iproute2), not found on PATH; "
                "apt-get install iproute2 or drop --link")
    return None


def _which(tool: str) -> str | None:
    return shutil.which(tool)


@dataclass
class SiteLink:
    ns: str
    host_if: str
    site_if: str
    host_addr: str
    site_addr: str


@dataclass
class LinkState:
    prefix: str
    rate: str
    delay_ms: float
    block: int
    netem: bool | None = None  # None: not tried yet
    sites: dict[str, SiteLink] = field(default_factory=dict)

    def describe(self) -> str:
        if self.netem:
            delay = f"{self.delay_ms:g} ms delay each way (netem)"
        elif self.delay_ms:
            delay = "no added delay: this kernel has no sch_netem"
        else:
            delay = "no added delay"
        return f"{self.rate} per site each way (tbf), {delay}"


class LabNet:
    """The namespaces, veth pairs and qdiscs of one lab (its state in ``net.json``)."""

    def __init__(self, lab_dir: Path) -> None:
        self.dir = lab_dir
        self.file = lab_dir / "net.json"
        self.prefix = prefix_for(lab_dir)

    def state(self) -> LinkState | None:
        raw = read_json(self.file, default=None)
        if not raw:
            return None
        sites = {k: SiteLink(**v) for k, v in raw.pop("sites", {}).items()}
        return LinkState(**raw, sites=sites)

    def _save(self, state: LinkState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.file, asdict(state))

    # ---- up --------------------------------------------------------------------
    def up(self, sites: dict[str, int], rate: str, delay_ms: float = DEFAULT_DELAY_MS) -> LinkState:
        """Make (or re-shape) one namespace and shaped veth pair per site (name -> index);
        idempotent."""
        why = missing_tools()
        if why:
            raise ConfigError(why)
        parse_rate(rate)
        if max(sites.values(), default=0) >= MAX_SITES:
            raise UsageError(f"--link supports at most {MAX_SITES} sites")
        old = self.state()
        state = LinkState(self.prefix, rate, delay_ms,
                          old.block if old else self._free_block(), old.netem if old else None,
                          dict(old.sites) if old else {})
        for site, index in sorted(sites.items(), key=lambda item: item[1]):
            state.sites.setdefault(site, self._plan(state.block, index))
            self._save(state)  # recorded before it exists: `down` finds it by name anyway
            self._make(state.sites[site])
            state.netem = self._shape(state.sites[site], state)
            self._save(state)
        return state

    def _plan(self, block: int, index: int) -> SiteLink:
        base = int(BENCH_NET.network_address) + block * 256 + index * 4
        return SiteLink(ns=f"{self.prefix}-{index}", host_if=f"{self.prefix}h{index}",
                        site_if=f"{self.prefix}s{index}",
                        host_addr=str(ipaddress.ip_address(base + 1)),
                        site_addr=str(ipaddress.ip_address(base + 2)))

    def _free_block(self) -> int:
        """This lab's /24: from its hash, or the next one no interface here uses."""
        start = int(self.prefix[2:], 16) % BLOCKS
        used = _used_blocks()
        for step in range(BLOCKS):
            block = (start + step) % BLOCKS
            if block not in used:
                return block
        raise ConfigError("every /24 of 198.18.0.0/15 is in use on this machine",
                          fix="run `fleet lab down` in the labs you no longer need")

    def _make(self, link: SiteLink) -> None:
        if link.ns not in namespaces():
            _ip("netns", "add", link.ns)
        if link.host_if not in links():
            _ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.site_if,
                "netns", link.ns)
        _ip("addr", "replace", f"{link.host_addr}/30", "dev", link.host_if)
        _ip("link", "set", link.host_if, "up")
        _ip("-n", link.ns, "addr", "replace", f"{link.site_addr}/30", "dev", link.site_if)
        _ip("-n", link.ns, "link", "set", link.site_if, "up")
        _ip("-n", link.ns, "link", "set", "lo", "up")

    def _shape(self, link: SiteLink, state: LinkState) -> bool:
        """A token bucket on each end, behind a netem delay where the kernel has one.
        Returns whether netem was used."""
        netem = state.netem is not False and state.delay_ms > 0
        for ns, dev in (("", link.host_if), (link.ns, link.site_if)):
            netem = self._shape_one(ns, dev, state, netem)
        return netem

    def _shape_one(self, ns: str, dev: str, state: LinkState, netem: bool) -> bool:
        where = ["-n", ns] if ns else []
        tbf = ["tbf", "rate", state.rate, "burst", str(_burst(parse_rate(state.rate))),
               "latency", "200ms"]
        if netem:
            delay = ["netem", "delay", f"{state.delay_ms:g}ms"]
            if _tc(*where, "qdisc", "replace", "dev", dev, "root", "handle", "1:", *delay,
                   check=False) == 0:
                _tc(*where, "qdisc", "replace", "dev", dev, "parent", "1:1", "handle", "10:", *tbf)
                return True
        _tc(*where, "qdisc", "replace", "dev", dev, "root", "handle", "1:", *tbf)
        return False

    # ---- down ------------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove every namespace and veth of this lab, by name prefix (the qdiscs go with
        their links); the names removed. Processes still inside a namespace are the lab's
        own and are killed first (`Lab.down` has normally stopped them)."""
        if missing_tools():
            self.file.unlink(missing_ok=True)
            return []
        removed = []
        for ns in namespaces():
            if self.owns(ns):
                _kill_inside(ns)
                _ip("netns", "del", ns, check=False)
                removed.append(ns)
        for name in links():
            if self.owns(name):
                _ip("link", "del", name, check=False)
                removed.append(name)
        self.file.unlink(missing_ok=True)
        return removed

    def owns(self, name: str) -> bool:
        return name.startswith(self.prefix) and name[len(self.prefix):][:1] in ("-", "h", "s")

    def leftovers(self) -> list[str]:
        """Namespaces and links of this lab that exist now (for tests and `lab status`)."""
        if missing_tools():
            return []
        return [n for n in namespaces() + links() if self.owns(n)]


def _burst(bits: int) -> int:
    """Bucket size in bytes: 10 ms at the rate, but never under a few full frames."""
    return max(bits // 8 // 100, 16 * 1024)


def namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"]).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            names.append(parts[1].strip().split("@")[0])
    return names


def _used_blocks() -> set[int]:
    out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
    used = set()
    for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)", out):
        addr = ipaddress.ip_address(match.group(1))
        if addr in BENCH_NET:
            used.add((int(addr) - int(BENCH_NET.network_address)) // 256)
    return used


def _kill_inside(ns: str) -> None:
    from fleet import processes

    for pid in _run(["ip", "netns", "pids", ns]).stdout.split():
        if pid.isdigit():
            processes.terminate(int(pid))


def _ip(*args: str, check: bool = True) -> int:
    return _cmd(["ip", *args], check)


def _tc(*args: str, check: bool = True) -> int:
    return _cmd(["tc", *args], check)


def _cmd(argv: list[str], check: bool) -> int:
    proc = _run(argv)
    if check and proc.returncode != 0:
        raise FleetError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.returncode}",
                          fix="run `fleet lab down` to clear what the lab made, then try again")
    return proc.returncode


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    tool = _which(argv[0]) or argv[0]
    return subprocess.run([tool, *argv[1:]], capture_output=True, text=True, timeout=30,
                          check=False)


def link_summary(state: LinkState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"rate": state.rate, "delay_ms": state.delay_ms if state.netem else 0.0,
            "netem": bool(state.netem), "describe": state.describe(),
            "sites": {s: {"namespace": v.ns, "address": v.site_addr, "controller": v.host_addr}
                      for s, v in state.sites.items()}}


def check(rate: str, factory: bool) -> None:
    """Refuse `--link` before anything changes: bad rate, factory lab, or no root/ip/tc."""
    parse_rate(rate)
    if factory:
        raise UsageError("--link does not support factory (unprovisioned) lab devices yet",
                         fix="drop --factory, or use the loopback lab for USB first boots")
    why = missing_tools()
    if why:
        raise ConfigError(why)


def inside(ns: str, argv: list[str]) -> list[str]:
    """`argv` run inside network namespace `ns` (as is when `ns` is empty)."""
    return [_which("ip") or "ip", "netns", "exec", ns, *argv] if ns else argv


def ssh_port(device: str) -> int:
    """A device's SSH port in its site's namespace: fixed by its number at the site
    (berlin-03 -> 2203), so a reboot never moves it, whatever the controller's own
    loopback has bound meanwhile."""
    number = device.rsplit("-", 1)[-1]
    return SSH_PORT_BASE + (int(number) if number.isdigit() else 0)


def runs_in(pid: int, ns: str) -> bool:
    """Is process `pid` in network namespace `ns` (ours when `ns` is empty)?"""
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net").st_ino
        wanted = os.stat(f"/run/netns/{ns}" if ns else "/proc/self/ns/net").st_ino
    except OSError:
        return False
    return theirs == wanted
