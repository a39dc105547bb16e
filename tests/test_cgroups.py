"""Cgroup layouts: the real hierarchy of this machine, and both v1 and v2 layouts.

Most Linux machines run cgroup v2 only, while CI here mounts v1 controllers:
the layout tests run the manager against a directory shaped like each
hierarchy (what it writes is what the kernel would read), and one test
creates a real group on this machine and reads the limits back from the kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandcell import Limits
from sandcell.isolation.cgroups import CgroupManager

LIMITS = Limits(memory_mb=300, cpus=0.5, pids=99)


def test_v2_layout_gets_limits_and_delegates_controllers(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    manager = CgroupManager(tmp_path)
    assert manager.v2_root == tmp_path and not manager.v1_roots
    group = manager.create("abc", LIMITS)
    path = tmp_path / "sandcell" / "abc"
    assert group.v2 == path and group.procs_files == [str(path / "cgroup.procs")]
    assert (path / "memory.max").read_text() == str(300 * 2**20)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "pids.max").read_text() == "99"
    assert (path / "cpu.max").read_text() == "50000 100000"
    assert (tmp_path / "sandcell" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert group.oom_kills() == 1


def test_v1_layout_gets_limits_per_controller(tmp_path: Path) -> None:
    for controller in ("memory", "pids", "cpu", "freezer"):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").write_text("")
    manager = CgroupManager(tmp_path)
    assert set(manager.v1_roots) == {"memory", "pids", "cpu", "freezer"} and manager.v2_root is None
    group = manager.create("abc", LIMITS)
    assert (tmp_path / "memory" / "sandcell" / "abc" / "memory.limit_in_bytes").read_text() == str(300 * 2**20)
    assert (tmp_path / "pids" / "sandcell" / "abc" / "pids.max").read_text() == "99"
    assert (tmp_path / "cpu" / "sandcell" / "abc" / "cpu.cfs_quota_us").read_text() == "50000"
    assert len(group.procs_files) == 4


def test_real_group_on_this_machine_enforces_what_was_asked() -> None:
    manager = CgroupManager()
    if not manager.available:
        pytest.skip("no writable cgroup hierarchy (not root)")
    group = manager.create("test-real-group", LIMITS)
    try:
        assert group.limits_memory
        if "memory" in group.v1:
            assert int((group.v1["memory"] / "memory.limit_in_bytes").read_text()) == 300 * 2**20
        elif group.v2 is not None:
            assert int((group.v2 / "memory.max").read_text()) == 300 * 2**20
        assert group.pids() == set()
    finally:
        group.remove()
    assert not group.exists()
