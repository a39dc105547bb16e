"""Regression tests for the red-team findings of the security issue, in every sandbox mode.

Each test names its finding. Sandboxes come forked from a fork server, handed
out by a pool, or started by a bubblewrap of their own (``any_sandbox``); the
host and a bystander sandbox are checked afterwards where an attack could
reach them.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
import secrets
import socket
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandcell import Limits, Sandbox
from sandcell.isolation.uids import reserve_uid

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="security tests need root (cgroups, unprivileged host uids)"),
]

SECRET_PREFIX = "SCSECRET-"


def run_py(sbx: Sandbox, code: str, timeout: float = 30) -> str:
    execution = sbx.run_code(textwrap.dedent(code), timeout=timeout)
    assert execution.error is None, f"{execution.error.name}: {execution.error.value}\n{execution.error.traceback}"
    return "".join(execution.logs.stdout)


def host_processes() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


# -- finding 2: nothing of one sandbox in the memory of later ones ---------------------------
SCAN_MEMORY = """
import hashlib, os, re
pattern = re.compile(rb"%s[0-9a-f]{32}")
found = set()
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
    except OSError:
        continue
    with mem:
        for line in maps:
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            if "r" not in line.split()[1]:
                continue
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            found.update(hashlib.sha256(match).hexdigest() for match in pattern.findall(chunk))
print(sorted(found))
"""


def copies_in_memory(pid: int, needle: bytes) -> int:
    """How many times ``needle`` is in the readable memory of host process ``pid`` (read as host root)."""
    found = 0
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if "r" not in perms or line.rstrip().endswith(("[vvar]", "[vvar_vclock]", "[vsyscall]")):
                continue
            start, end = (int(part, 16) for part in span.split("-"))
            try:
                mem.seek(start)
                found += mem.read(end - start).count(needle)
            except OSError:
                continue
    return found


def test_a_sandboxs_envs_never_reach_a_later_sandbox(any_sandbox: Callable[..., Sandbox]) -> None:
    secret = SECRET_PREFIX + secrets.token_hex(16)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    # Copies of the secret among other envs of all sizes: freed memory is reused
    # unevenly, so a later, smaller request cannot cover them all.
    envs = {"OPENAI_API_KEY": secret} | {f"PAD_{size}": "p" * size + secret for size in (100, 2_000, 20_000)}
    first = any_sandbox(envs=envs)
    assert run_py(first, "import os; print(os.environ['OPENAI_API_KEY'][:9])").strip() == SECRET_PREFIX
    # The scanner sees its own copy, which proves it works where the secret is.
    assert digest in run_py(first, SCAN_MEMORY % SECRET_PREFIX)
    first.kill()
    for _ in range(2):  # the next one forked, and one after another start in between
        later = any_sandbox()
        # What its code can read, and (as host root) all of its processes: one exploit away.
        assert digest not in run_py(later, SCAN_MEMORY % SECRET_PREFIX, timeout=60)
        for pid in later.backend.process.cgroup.pids():
            assert copies_in_memory(pid, secret.encode()) == 0, f"{Path(f'/proc/{pid}/comm').read_text().strip()} holds the secret"


def test_no_host_process_shows_a_sandboxs_envs(any_sandbox: Callable[..., Sandbox]) -> None:
    """Finding 12: the config travels on the supervisor's stdin, not in bwrap's argv or any environment."""
    secret = SECRET_PREFIX + secrets.token_hex(16)
    sbx = any_sandbox(envs={"TOKEN": secret})
    assert run_py(sbx, f"import os; print(os.environ['TOKEN'] == {secret!r})").strip() == "True"
    own = sbx.backend.process.cgroup.pids()  # its own processes have it in their environment, readable by it alone
    for pid in host_processes():
        for part in ("cmdline",) if pid in own else ("cmdline", "environ"):
            try:
                assert secret.encode() not in Path(f"/proc/{pid}/{part}").read_bytes(), f"pid {pid} shows it in {part}"
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue


def test_the_fork_server_holds_nothing_of_its_sandboxes(make_sandbox: Callable[..., Sandbox]) -> None:
    secret = SECRET_PREFIX + secrets.token_hex(16)
    sbx = make_sandbox(envs={"TOKEN": secret})
    sbx.run_code("1")
    servers = [pid for pid in host_processes() if Path(f"/proc/{pid}/comm").read_text().strip() == "sandcell-forksv"]
    assert servers, "no fork server runs"
    assert all(copies_in_memory(pid, secret.encode()) == 0 for pid in servers)


# -- finding 3: kernel budgets of host root ------------------------------------------------------
libc = ctypes.CDLL(None, use_errno=True)
CLOCK_MONOTONIC = 1


def host_root_can_use_inotify_and_timers() -> None:
    fd = libc.inotify_init1(0)
    assert fd >= 0, f"host root's inotify_init failed: {os.strerror(ctypes.get_errno())}"
    os.close(fd)
    timer = ctypes.c_void_p()
    assert libc.timer_create(CLOCK_MONOTONIC, None, ctypes.byref(timer)) == 0, f"host root's timer_create failed: {os.strerror(ctypes.get_errno())}"
    libc.timer_delete(timer)


EXHAUST = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
inotify = 0
while inotify < 10000 and libc.inotify_init1(0) >= 0:
    inotify += 1
timers = 0
timer = ctypes.c_void_p()
while timers < 200000 and libc.timer_create(1, None, ctypes.byref(timer)) == 0:
    timers += 1
print(inotify, timers)
"""


def test_per_user_kernel_budgets_stay_the_sandboxs_own(any_sandbox: Callable[..., Sandbox]) -> None:
    attacker, bystander = any_sandbox(), any_sandbox()
    inotify, timers = map(int, run_py(attacker, EXHAUST, timeout=60).split())
    assert 0 < inotify <= 128 and 0 < timers <= 1024, (inotify, timers)
    host_root_can_use_inotify_and_timers()
    bystander.files.make_dir("/home/user/watched")
    handle = bystander.files.watch_dir("/home/user/watched")
    bystander.files.write("/home/user/watched/a.txt", "x")
    deadline = time.monotonic() + 10
    events = handle.get_new_events()
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
        events = handle.get_new_events()
    handle.stop()
    assert events, "the bystander's watch saw nothing"
    assert run_py(bystander, "import ctypes; print(ctypes.CDLL(None).inotify_init1(0) >= 0)").strip() == "True"


# -- finding 4: network=True is never the host's network ------------------------------------------
def test_network_sandbox_does_not_see_the_host(any_sandbox: Callable[..., Sandbox]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = "sandcell-test-" + secrets.token_hex(4)
    abstract.bind("\0" + name)
    abstract.listen()
    try:
        sbx = any_sandbox(network=True)
        report = run_py(
            sbx,
            f"""
            import socket
            results = []
            for family, address in ((socket.AF_INET, ("127.0.0.1", {port})), (socket.AF_UNIX, "\\0{name}")):
                probe = socket.socket(family, socket.SOCK_STREAM)
                probe.settimeout(3)
                try:
                    probe.connect(address)
                    results.append("reached")
                except OSError:
                    results.append("refused")
            print(results, "{port:04X}" in open("/proc/net/tcp").read(), "{name}" in open("/proc/net/unix").read())
            """,
        )
        assert report.strip() == "['refused', 'refused'] False False", report
    finally:
        listener.close()
        abstract.close()


# -- finding 9: socket families -----------------------------------------------------------------
def test_only_unix_ip_and_netlink_sockets(any_sandbox: Callable[..., Sandbox]) -> None:
    report = run_py(
        any_sandbox(),
        """
        import errno, socket
        allowed = []
        kinds = (
            (socket.AF_UNIX, socket.SOCK_STREAM), (socket.AF_INET, socket.SOCK_DGRAM),
            (socket.AF_INET6, socket.SOCK_DGRAM), (socket.AF_NETLINK, socket.SOCK_RAW),
        )
        for family, kind in kinds:
            socket.socket(family, kind).close()
            allowed.append(family)
        refused = []
        for family in (40, 17, 31, 38, 2**31 - 1):  # AF_VSOCK, AF_PACKET, AF_BLUETOOTH, AF_ALG, nonsense
            try:
                socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                refused.append(exc.errno == errno.EAFNOSUPPORT)
        print(len(allowed), refused)
        """,
    )
    assert report.strip() == "4 [True, True, True, True, True]"


# -- finding 10: ptys and rlimits -----------------------------------------------------------------
def test_contexts_have_the_supervisors_rlimits(any_sandbox: Callable[..., Sandbox]) -> None:
    limits = Limits(pids=200, open_files=1000, disk_mb=300)
    sbx = any_sandbox(limits=limits)
    code = "import resource as r; print([r.getrlimit(getattr(r, 'RLIMIT_' + n)) for n in ('NOFILE', 'FSIZE', 'NPROC', 'SIGPENDING', 'CORE')])"
    expected = str([(1000, 1000), (300 << 20, 300 << 20), (200, 200), (1024, 1024), (0, 0)])
    assert run_py(sbx, code).strip() == expected
    context = sbx.create_code_context(language="python")
    assert sbx.run_code(code, context=context).logs.stdout[0].strip() == expected
    assert sbx.commands.run("ulimit -n; ulimit -u").stdout.split() == ["1000", "200"]


def test_ptys_per_sandbox_are_bounded(any_sandbox: Callable[..., Sandbox]) -> None:
    """Each sandbox has a devpts of its own with max=; a bystander can still open one afterwards."""
    attacker, bystander = any_sandbox(limits=Limits(open_files=8192)), any_sandbox()
    opened = run_py(
        attacker,
        "import os\nptys = []\ntry:\n    while len(ptys) < 5000:\n        ptys.append(os.openpty())\nexcept OSError:\n    pass\nprint(len(ptys))",
        timeout=60,
    )
    assert 0 < int(opened) <= 128
    assert run_py(bystander, "import os; print(len(os.openpty()))").strip() == "2"


# -- finding 11: host uids ---------------------------------------------------------------------------
def test_host_uids_are_random_and_reserved(tmp_path: Path) -> None:
    held = [reserve_uid(tmp_path / "uids.lock", 5000, 1, 3) for _ in range(3)]
    assert sorted(uid for uid, _ in held) == [5001, 5002, 5003]
    with pytest.raises(OSError, match="no free host uid"):
        reserve_uid(tmp_path / "uids.lock", 5000, 1, 3)
    freed_uid, freed_fd = held.pop(1)
    os.close(freed_fd)
    uid, fd = reserve_uid(tmp_path / "uids.lock", 5000, 1, 3)
    assert uid == freed_uid
    for _, other in [*held, (uid, fd)]:
        os.close(other)


def test_sandboxes_get_distinct_unordered_host_uids(any_sandbox: Callable[..., Sandbox]) -> None:
    uids = [any_sandbox().backend.process.host_uid for _ in range(4)]
    assert None not in uids and len(set(uids)) == 4
    steps = {b - a for a, b in itertools.pairwise(uids)}
    assert steps != {1}, f"sequential uids: {uids}"


# -- finding 14: the supervisor is out of reach of the sandbox's signals -----------------------
def test_code_cannot_stop_the_supervisor(any_sandbox: Callable[..., Sandbox]) -> None:
    sbx = any_sandbox()
    report = run_py(
        sbx,
        """
        import os, signal
        refused = []
        for target in (2, -2, -1):
            try:
                os.kill(target, signal.SIGSTOP)
                refused.append(False)
            except PermissionError:
                refused.append(True)
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        tkill, tgkill = {"x86_64": (200, 234), "aarch64": (130, 131)}[os.uname().machine]
        for tid in map(int, os.listdir("/proc/2/task")):  # its threads, one by one
            refused.append(libc.syscall(tkill, tid, signal.SIGSTOP) == -1 and libc.syscall(tgkill, 2, tid, signal.SIGSTOP) == -1)
        refused = [all(refused[:3]), all(refused[3:])]
        print(refused, open("/proc/2/stat").read().split()[2])
        """,
    )
    assert report.strip() == "[True, True] S", report
    started = time.monotonic()
    execution = sbx.run_code("import time; time.sleep(100)", timeout=2)
    assert execution.error is not None and execution.error.name == "TimeoutError"
    assert time.monotonic() - started < 10
    assert sbx.run_code("1 + 1").text == "2"


def test_a_stopped_run_still_times_out(any_sandbox: Callable[..., Sandbox]) -> None:
    """Everything the code can reach, stopped: the run's timeout still holds."""
    sbx = any_sandbox()
    code = (
        "import os, signal\n"
        "for pid in [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:\n"
        "    try: os.kill(pid, signal.SIGSTOP)\n"
        "    except OSError: pass\n"
        "import time; time.sleep(100)"
    )
    started = time.monotonic()
    execution = sbx.run_code(code, timeout=2)
    assert execution.error is not None and execution.error.name == "TimeoutError"
    assert time.monotonic() - started < 10
    assert sbx.run_code("'alive'").text == "alive"
