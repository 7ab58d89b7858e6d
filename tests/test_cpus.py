"""``--workers 0`` and ``render_concurrency = 0`` count the CPUs a container may use: its cgroup quota
(``docker run --cpus``) and the affinity mask (``--cpuset-cpus``, ``taskset``), not the host's cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cpus import cgroup_cpu_quota, usable_cpus


def cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "sys-fs-cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership)
    return root, proc


@pytest.mark.parametrize(("membership", "files", "quota"), [
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 1.5),                    # v2, inside a container
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),                      # v2, no quota
    ("0::/a/b\n", {"a/cpu.max": "50000 100000\n", "a/b/cpu.max": "max 100000\n"}, 0.5),  # an ancestor's
    ("4:cpu,cpuacct:/docker/x\n", {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "200000\n",
                                   "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
    ("4:cpu,cpuacct:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ("0::/\n", {}, None),                                               # no cgroup files at all
])
def test_the_cgroup_quota(tmp_path: Path, membership: str, files: dict[str, str],
                          quota: float | None) -> None:
    root, proc = cgroup(tmp_path, membership, files)
    assert cgroup_cpu_quota(root, proc) == quota


def test_a_quota_below_the_cores_caps_the_count(tmp_path: Path) -> None:
    root, proc = cgroup(tmp_path, "0::/\n", {"cpu.max": "50000 100000\n"})
    assert usable_cpus(root, proc) == 1
    root, proc = cgroup(tmp_path / "big", "0::/\n", {"cpu.max": f"{1000 * 100000} 100000\n"})
    assert usable_cpus(root, proc) == len(os.sched_getaffinity(0))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: affinity cannot narrow it")
def test_the_affinity_mask_is_honoured() -> None:
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from proxy.cpus import usable_cpus; from proxy.config import build_config; "
            "cfg = build_config({'server': {'workers': 0}, 'libraries': [{'id': 'a', 'origin': '.'}]}); "
            "print(usable_cpus(), cfg.server.processes, cfg.limits.workers)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1", "1"]
