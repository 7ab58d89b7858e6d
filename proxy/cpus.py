"""How many CPUs this process may use: its affinity and its cgroup's CPU quota (a container's
``--cpus``), not the host's core count that ``os.cpu_count()`` reports."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process can keep busy: the affinity mask, capped by the cgroup quota (rounded up)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs the CFS quota allows (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), the tightest of the
    process's cgroup and its ancestors; None when there is no quota."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    found: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2 (or the unified hierarchy of a hybrid setup)
            for base in (cgroup_root, cgroup_root / "unified"):
                found += [q for folder in _up(base, path) if (q := _v2(folder)) is not None]
        elif "cpu" in controllers.split(","):
            for base in (cgroup_root / "cpu", cgroup_root / controllers):
                found += [q for folder in _up(base, path) if (q := _v1(folder)) is not None]
    return min(found) if found else None


def _up(base: Path, path: str) -> list[Path]:
    """``base/path`` and its ancestors up to ``base`` (a quota may be set on any of them)."""
    parts = [p for p in path.split("/") if p and p != ".."]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2(folder: Path) -> float | None:
    try:
        quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100000)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError, ZeroDivisionError):
        return None
