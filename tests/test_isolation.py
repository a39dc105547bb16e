"""Escape attempts that must fail, run against real sandboxes.

Every attack runs inside a real bubblewrap sandbox (no mocks). After each
one, ``witnesses.check()`` asserts that the host (a host process, a host
file, /etc/passwd and /etc/shadow) and a second, bystanding sandbox are
untouched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandcell import CommandExitException, InvalidArgumentException, Limits, NotFoundException, Sandbox, SandboxException, TimeoutException
from sandcell.isolation import HOST_UID_BASE, SANDBOX_UID

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="isolation tests need root (cgroups, unprivileged host uids)"),
]


@pytest.fixture
def make_sandbox(any_sandbox: Callable[..., Sandbox]) -> Callable[..., Sandbox]:
    """Every test here runs in every sandbox mode (see ``any_sandbox``): their isolation must be identical."""
    return any_sandbox


HOST_ONLY_PATHS = ("/root", "/root/.pyenv", "/etc/shadow", "/etc/gshadow", "/work", "/work/main", "/var", "/boot", "/home/user/../../root")


# -- helpers ----------------------------------------------------------------------
def out(execution: Any) -> str:
    return "".join(execution.logs.stdout)


def err(execution: Any) -> str:
    return "".join(execution.logs.stderr)


def run_py(sbx: Sandbox, code: str, timeout: float = 20) -> str:
    """Run Python that must not raise; return its stdout."""
    execution = sbx.run_code(textwrap.dedent(code), timeout=timeout)
    assert execution.error is None, f"{execution.error.name}: {execution.error.value}\n{execution.error.traceback}"
    return out(execution)


def run_bash(sbx: Sandbox, code: str, timeout: float = 20) -> str:
    """Run a bash cell (it may fail); return stdout + stderr."""
    execution = sbx.run_code(textwrap.dedent(code), language="bash", timeout=timeout)
    return out(execution) + err(execution)


def run_js(sbx: Sandbox, code: str, timeout: float = 20) -> str:
    execution = sbx.run_code(textwrap.dedent(code), language="javascript", timeout=timeout)
    assert execution.error is None, f"{execution.error.name}: {execution.error.value}\n{execution.error.traceback}"
    return out(execution)


def command(sbx: Sandbox, cmd: str, timeout: float = 20) -> tuple[int, str, str]:
    """Run a shell command whatever its exit code."""
    try:
        result = sbx.commands.run(cmd, timeout=timeout)
    except CommandExitException as exc:  # it is the command's result: exit code, stdout, stderr
        result = exc
    return result.exit_code, result.stdout, result.stderr


def proc_status(pid: int) -> dict[str, str] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def real_uid(pid: int) -> int | None:
    status = proc_status(pid)
    return int(status["Uid"].split()[0]) if status else None


def alive_as(pid: int, uid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process of host uid ``uid``.

    A killed sandbox's last processes may linger a moment as zombies, until
    the host's init reaps them: they cannot run anything any more.
    """
    status = proc_status(pid)
    return status is not None and int(status["Uid"].split()[0]) == uid and not status["State"].startswith(("Z", "X"))


def host_pids_of_uid(uid: int) -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and alive_as(int(entry), uid)]


def sandbox_pids(sbx: Sandbox) -> set[int]:
    cgroup = sbx.backend.process.cgroup
    assert cgroup is not None, "these tests need cgroups (run as root)"
    return cgroup.pids()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def rss_bytes() -> int:
    status = proc_status(os.getpid())
    assert status is not None
    return int(status["VmRSS"].split()[0]) * 1024


class Witnesses:
    """The host and a second sandbox, checked after every attack."""

    def __init__(self, make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> None:
        self.marker = tmp_path / "host_marker"
        self.marker.write_text("host-original")
        self.sleeper = subprocess.Popen(["sleep", "600"])
        self.hashes = {path: sha256(path) for path in ("/etc/passwd", "/etc/shadow", "/etc/hosts")}
        self.other = make_sandbox()
        run_py(self.other, "bystander_state = 6 * 7")
        self.other.files.write("/home/user/bystander.txt", "still here")
        self.other_pids = sandbox_pids(self.other)

    def check(self) -> None:
        assert self.sleeper.poll() is None, "a host process was killed"
        assert self.marker.read_text() == "host-original", "a host file was modified"
        for path, digest in self.hashes.items():
            assert sha256(path) == digest, f"host {path} changed"
        subprocess.run(["true"], check=True, timeout=10)  # the host can still fork
        assert self.other.is_running()
        execution = self.other.run_code("bystander_state", timeout=20)
        assert execution.error is None and execution.text == "42", "the bystanding sandbox lost its state"
        assert self.other.files.read("/home/user/bystander.txt") == "still here"
        assert self.other.commands.run("echo ok", timeout=20).stdout == "ok\n"
        assert self.other_pids <= sandbox_pids(self.other), "processes of the bystanding sandbox died"

    def close(self) -> None:
        self.sleeper.kill()
        self.sleeper.wait()


@pytest.fixture
def witnesses(make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> Iterator[Witnesses]:
    w = Witnesses(make_sandbox, tmp_path)
    yield w
    w.close()


# -- host files -------------------------------------------------------------------
def test_host_only_files_are_invisible_python(sandbox: Sandbox, witnesses: Witnesses) -> None:
    probe = f"""
    import os, json
    paths = {[*list(HOST_ONLY_PATHS), str(witnesses.marker), "/proc/1/root/root", "/proc/1/root/work"]!r}
    found = {{}}
    for path in paths:
        try:
            found[path] = os.listdir(path) if os.path.isdir(path) else open(path, "rb").read(100).decode("latin-1")
        except OSError as exc:
            found[path] = None
    print(json.dumps(found))
    print(json.dumps(sorted(os.listdir("/"))))
    """
    lines = run_py(sandbox, probe).splitlines()
    found, root = json.loads(lines[0]), json.loads(lines[1])
    assert all(value is None for value in found.values()), f"host-only paths visible in the sandbox: {found}"
    assert not {"root", "work", "var", "boot", "srv", "mnt", "sys"} & set(root), root
    witnesses.check()


def test_host_only_files_are_invisible_bash(sandbox: Sandbox, witnesses: Witnesses) -> None:
    text = run_bash(
        sandbox,
        f"""
        cat /etc/shadow && echo LEAK-shadow
        ls -A /root && echo LEAK-root
        ls -A /root/.pyenv && echo LEAK-pyenv
        ls -A /work && echo LEAK-work
        cat {witnesses.marker} && echo LEAK-marker
        cat /proc/1/root/etc/shadow && echo LEAK-proc-root
        ls /sys/fs/cgroup && echo LEAK-cgroupfs
        grep -rl host-original /tmp /home /dev/shm /etc /opt 2>/dev/null && echo LEAK-grep
        true
        """,
    )
    assert "LEAK" not in text, text
    assert "host-original" not in text
    witnesses.check()


def test_host_only_files_are_invisible_node(sandbox: Sandbox, witnesses: Witnesses) -> None:
    text = run_js(
        sandbox,
        f"""
        const fs = require("fs");
        for (const p of ["/etc/shadow", "/root", "/root/.pyenv", "/work", {json.dumps(str(witnesses.marker))}]) {{
          try {{
            const st = fs.statSync(p);
            console.log("LEAK", p, st.isDirectory() ? fs.readdirSync(p).join(",") : fs.readFileSync(p, "latin1"));
          }} catch (e) {{
            console.log("ok", p, e.code);
          }}
        }}
        """,
    )
    assert "LEAK" not in text, text
    assert text.count("ENOENT") == 5, text
    witnesses.check()


def test_host_environment_not_leaked(sandbox: Sandbox, witnesses: Witnesses, monkeypatch: pytest.MonkeyPatch) -> None:
    """No process in the sandbox (bwrap's pid 1 included) carries the host's environment."""
    monkeypatch.setenv("SANDCELL_HOST_SECRET", "host-secret-" + secrets.token_hex(8))
    other = Sandbox.create(timeout=60)  # started with the secret in the host's environment
    try:
        text = run_py(
            other,
            """
            import os, json
            envs = {}
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        envs[entry] = open(f"/proc/{entry}/environ", "rb").read().decode(errors="replace")
                    except OSError:
                        pass
            print(json.dumps(envs))
            """,
        )
    finally:
        other.kill()
    envs = json.loads(text)
    # pid 1 is bubblewrap (readable, its environment cleared) or a fork server's
    # init, which is not dumpable: only the sandbox's own processes are read.
    assert envs
    for pid, environ in envs.items():
        assert "host-secret-" not in environ, (pid, environ)
        assert os.environ["PATH"] not in environ or os.environ["PATH"] == "/usr/bin:/bin", (pid, environ)
        assert "=/root" not in environ and ":/root" not in environ, (pid, environ)
    witnesses.check()


READ_ONLY_TARGETS = (
    "/usr/sandcell_pwned",
    "/usr/bin/python3",
    "/etc/passwd",
    "/etc/sandcell_pwned",
    "/etc/ld.so.preload",
    "/opt/sandcell/runtime/bin/sandcell_pwned",
    "/opt/sandcell/runtime/bin/python",
    "/opt/sandcell_pwned",
    "/sandcell_pwned",
    "/lib/sandcell_pwned",
    "/dev/sandcell_pwned",
)


def assert_host_system_untouched(before: dict[str, str | None]) -> None:
    for path, digest in before.items():
        assert sha256(path) == digest, f"host {path} changed"
    for path in READ_ONLY_TARGETS:
        if "pwned" in path:
            assert not os.path.lexists(path), f"{path} was created on the host"


def host_hashes() -> dict[str, str | None]:
    paths = ["/etc/passwd", "/opt/sandcell/etc/passwd", "/usr/bin/python3"]
    return {path: sha256(path) for path in paths}


def test_read_only_system_python(sandbox: Sandbox, witnesses: Witnesses) -> None:
    before = host_hashes()
    probe = f"""
    import os, json
    written = []
    for path in {list(READ_ONLY_TARGETS)!r}:
        try:
            with open(path, "ab") as handle:
                handle.write(b"pwned")
            written.append(path)
        except OSError:
            pass
    for path in ("/usr/lib/sandcell_dir", "/etc/sandcell_dir", "/root", "/opt/sandcell/stage/x"):
        try:
            os.mkdir(path)
            written.append(path)
        except OSError:
            pass
    for path in ("/usr/bin/python3", "/etc/passwd"):
        try:
            os.chmod(path, 0o777)
            written.append("chmod " + path)
        except OSError:
            pass
    print(json.dumps(written))
    """
    assert json.loads(run_py(sandbox, probe)) == []
    assert_host_system_untouched(before)
    witnesses.check()


def test_read_only_system_bash(sandbox: Sandbox, witnesses: Witnesses) -> None:
    before = host_hashes()
    script = "\n".join(f"(echo pwned >> {path}) 2>/dev/null && echo WROTE {path}" for path in READ_ONLY_TARGETS)
    script += (
        "\nmkdir /root 2>/dev/null && echo WROTE /root\ntouch /usr/bin 2>/dev/null && echo WROTE touch\nrm -f /etc/passwd 2>/dev/null && echo WROTE rm\ntrue"
    )
    assert "WROTE" not in run_bash(sandbox, script)
    code, _stdout, stderr = command(sandbox, "echo pwned > /etc/passwd")
    assert code != 0 and ("Read-only" in stderr or "Permission denied" in stderr), stderr
    assert_host_system_untouched(before)
    witnesses.check()


def test_read_only_system_node(sandbox: Sandbox, witnesses: Witnesses) -> None:
    before = host_hashes()
    text = run_js(
        sandbox,
        f"""
        const fs = require("fs");
        for (const p of {json.dumps(list(READ_ONLY_TARGETS))}) {{
          try {{ fs.appendFileSync(p, "pwned"); console.log("WROTE", p); }} catch (e) {{ console.log("denied", e.code); }}
        }}
        """,
    )
    assert "WROTE" not in text, text
    assert_host_system_untouched(before)
    witnesses.check()


def test_files_api_cannot_write_the_system(sandbox: Sandbox, witnesses: Witnesses) -> None:
    before = host_hashes()
    for path in ("/etc/passwd", "/usr/sandcell_pwned", "/opt/sandcell/runtime/bin/python", "/sandcell_pwned"):
        with pytest.raises(SandboxException):
            sandbox.files.write(path, "pwned")
    with pytest.raises(SandboxException):
        sandbox.files.remove("/etc/passwd")
    with pytest.raises(SandboxException):
        sandbox.files.make_dir("/root/x")
    assert_host_system_untouched(before)
    witnesses.check()


def test_no_host_devices_or_kernel_knobs(sandbox: Sandbox, witnesses: Witnesses) -> None:
    text = run_py(
        sandbox,
        """
        import os, json
        result = {"dev": sorted(os.listdir("/dev")), "denied": {}}
        for name, call in (
            ("mknod", lambda: os.mknod("/home/user/mem", 0o600 | 0o020000, os.makedev(1, 1))),
            ("proc_sys", lambda: open("/proc/sys/kernel/hostname", "w").write("pwned")),
            ("sys", lambda: os.listdir("/sys")),
            ("cgroup", lambda: open("/sys/fs/cgroup/cgroup.procs").read()),
            ("kmsg", lambda: open("/dev/kmsg").read(1)),
        ):
            try:
                call()
                result["denied"][name] = False
            except OSError:
                result["denied"][name] = True
        print(json.dumps(result))
        """,
    )
    result = json.loads(text)
    assert all(result["denied"].values()), result["denied"]
    allowed = {"core", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"}
    assert set(result["dev"]) <= allowed, set(result["dev"]) - allowed
    witnesses.check()


# -- network ------------------------------------------------------------------------
class Listener:
    def __init__(self, host: str) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((host, 0))
        self.server.listen(16)
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.server.close()


@pytest.fixture
def host_listener() -> Iterator[Listener]:
    listener = Listener("127.0.0.1")
    # The listener really works from the host.
    with socket.create_connection(("127.0.0.1", listener.port), timeout=2):
        pass
    assert wait_until(lambda: listener.accepted == 1, 2)
    listener.accepted = 0
    yield listener
    listener.close()


def test_host_loopback_unreachable_python(sandbox: Sandbox, host_listener: Listener, witnesses: Witnesses) -> None:
    text = run_py(
        sandbox,
        f"""
        import socket
        for host in ("127.0.0.1", "localhost", "::1"):
            try:
                socket.create_connection((host, {host_listener.port}), timeout=3).close()
                print("CONNECTED", host)
            except OSError as exc:
                print("blocked", host, type(exc).__name__)
        """,
    )
    assert "CONNECTED" not in text, text
    assert "ConnectionRefusedError" in text  # its own, empty loopback
    assert host_listener.accepted == 0
    witnesses.check()


def test_host_loopback_unreachable_bash(sandbox: Sandbox, host_listener: Listener, witnesses: Witnesses) -> None:
    text = run_bash(sandbox, f"(exec 3<>/dev/tcp/127.0.0.1/{host_listener.port}) && echo CONNECTED || echo blocked")
    assert "CONNECTED" not in text and "blocked" in text, text
    code, stdout, _ = command(sandbox, f"timeout 5 bash -c 'echo hi > /dev/tcp/127.0.0.1/{host_listener.port}' && echo CONNECTED")
    assert code != 0 and "CONNECTED" not in stdout
    assert host_listener.accepted == 0
    witnesses.check()


def test_host_loopback_unreachable_node(sandbox: Sandbox, host_listener: Listener, witnesses: Witnesses) -> None:
    text = run_js(
        sandbox,
        f"""
        const net = require("net");
        await new Promise((resolve) => {{
          const s = net.connect({host_listener.port}, "127.0.0.1");
          s.setTimeout(3000, () => {{ console.log("blocked timeout"); s.destroy(); resolve(); }});
          s.on("connect", () => {{ console.log("CONNECTED"); s.destroy(); resolve(); }});
          s.on("error", (e) => {{ console.log("blocked", e.code); resolve(); }});
        }});
        """,
    )
    assert "CONNECTED" not in text and "blocked ECONNREFUSED" in text, text
    assert host_listener.accepted == 0
    witnesses.check()


def host_addresses() -> list[str]:
    if not shutil.which("ip"):
        return []
    text = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].split("/")[0] for line in text.splitlines() if len(line.split()) > 3]


def test_no_network_interfaces_or_routes(sandbox: Sandbox, witnesses: Witnesses) -> None:
    listener = Listener("0.0.0.0")
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_name = "sandcell-test-" + secrets.token_hex(8)
    abstract.bind("\0" + abstract_name)
    abstract.listen(1)
    try:
        targets = [*host_addresses(), "8.8.8.8", "1.1.1.1"]
        text = run_py(
            sandbox,
            f"""
            import socket
            print("interfaces", sorted(name for _, name in socket.if_nameindex()))
            print("netdev", [l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]])
            for host in {targets!r}:
                try:
                    socket.create_connection((host, {listener.port}), timeout=3).close()
                    print("CONNECTED", host)
                except OSError as exc:
                    print("blocked", host, exc.errno)
            try:
                socket.getaddrinfo("example.com", 80)
                print("CONNECTED dns")
            except OSError:
                print("blocked dns")
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.sendto(b"x", ("8.8.8.8", 53))
                print("CONNECTED udp")
            except OSError as exc:
                print("blocked udp", exc.errno)
            a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                a.connect("\\0{abstract_name}")
                print("CONNECTED abstract")
            except OSError as exc:
                print("blocked abstract", type(exc).__name__)
            """,
        )
        assert "interfaces ['lo']" in text and "netdev ['lo']" in text, text
        assert "CONNECTED" not in text, text
        assert listener.accepted == 0
    finally:
        listener.close()
        abstract.close()
    witnesses.check()


# -- uids and capabilities -------------------------------------------------------------
def test_processes_run_as_unprivileged_host_uid(sandbox: Sandbox, witnesses: Witnesses) -> None:
    sandbox.commands.run("sleep 30", background=True)
    run_js(sandbox, "1")  # start a node context too
    pids = sandbox_pids(sandbox)
    assert len(pids) >= 4, pids  # bwrap, supervisor, python kernel, node, sleep...
    host_uid = sandbox.backend.process.host_uid
    assert host_uid is not None and host_uid >= HOST_UID_BASE
    outside: list[bytes] = []
    for pid in pids:
        status = proc_status(pid)
        assert status is not None
        uids = [int(value) for value in status["Uid"].split()]
        gids = [int(value) for value in status["Gid"].split()]
        assert uids[0] != 0 and all(uid == host_uid for uid in uids), (pid, status["Uid"])
        assert all(gid >= HOST_UID_BASE for gid in gids), (pid, status["Gid"])
        assert status["Groups"] == "", (pid, status["Groups"])
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, (pid, status["CapEff"])
        assert int(status["CapAmb"], 16) == 0
        assert status["NoNewPrivs"] == "1", pid
        if len(status["NSpid"].split()) == 1:
            # bwrap's own monitor stays in the host's pid namespace, out of the
            # sandbox's reach (it cannot see it), and waits for pid 1.
            outside.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0])
        else:
            assert status["Seccomp"] == "2", pid
    # A fork server's child leaves no process outside the sandbox's pid namespace.
    assert outside in ([], [b"bwrap"], [shutil.which("bwrap").encode()]), outside
    # Another sandbox gets another uid.
    assert witnesses.other.backend.process.host_uid != host_uid
    witnesses.check()


def test_inside_uid_1000_without_capabilities(sandbox: Sandbox, witnesses: Witnesses) -> None:
    text = run_py(
        sandbox,
        """
        import os, json
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        caps = {k: int(status[k].strip(), 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
        attempts = {}
        for name, call in (("setuid", lambda: os.setuid(0)), ("setgid", lambda: os.setgid(0)), ("setgroups", lambda: os.setgroups([0])),
                           ("chown", lambda: os.chown("/home/user", 0, 0)), ("chroot", lambda: os.chroot("/tmp"))):
            try:
                call()
                attempts[name] = "SUCCEEDED"
            except OSError as exc:
                attempts[name] = exc.errno
        print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "caps": caps,
                          "nnp": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(), "attempts": attempts}))
        """,
    )
    info = json.loads(text)
    assert info["uid"] == info["euid"] == info["gid"] == SANDBOX_UID
    assert all(value == 0 for value in info["caps"].values()), info["caps"]
    assert info["nnp"] == "1" and info["seccomp"] == "2"
    assert "SUCCEEDED" not in info["attempts"].values(), info["attempts"]
    assert command(sandbox, "id -u")[1] == "1000\n"
    _code, stdout, _stderr = command(sandbox, "su -c id root </dev/null; sudo -n id; mount -t tmpfs none /tmp; id -u")
    assert stdout.strip().splitlines()[-1] == "1000" and "uid=0" not in stdout
    witnesses.check()


# -- pid namespace ---------------------------------------------------------------------
def test_sees_only_its_own_processes(sandbox: Sandbox, witnesses: Witnesses) -> None:
    text = run_py(
        sandbox,
        """
        import os, json
        procs = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    procs[entry] = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
                except OSError:
                    pass
        print(json.dumps(procs))
        """,
    )
    procs = {int(pid): cmdline for pid, cmdline in json.loads(text).items()}
    assert len(procs) < 12, procs
    assert witnesses.sleeper.pid not in procs or "sleep 600" not in procs[witnesses.sleeper.pid]
    assert not any("pytest" in cmdline or "sleep 600" in cmdline for cmdline in procs.values()), procs
    assert procs[1].startswith(("bwrap", "sandcell-init")), procs  # pid 1 is the sandbox's own init
    ps = command(sandbox, "ps -eo pid,args")[1]
    assert "pytest" not in ps and "sleep 600" not in ps and len(ps.splitlines()) < 12, ps
    witnesses.check()


def test_cannot_signal_host_processes(sandbox: Sandbox, witnesses: Witnesses) -> None:
    target = witnesses.sleeper.pid
    text = run_py(
        sandbox,
        f"""
        import os, signal
        for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):
            try:
                os.kill({target}, sig)
                print("SIGNALLED")
            except OSError as exc:
                print("denied", type(exc).__name__)
        try:
            os.kill(-{target}, signal.SIGKILL)
            print("SIGNALLED group")
        except OSError as exc:
            print("denied", type(exc).__name__)
        """,
    )
    assert "SIGNALLED" not in text and "ProcessLookupError" in text, text
    text = run_bash(sandbox, f"kill -9 {target} && echo SIGNALLED; kill -STOP {target} && echo SIGNALLED; true")
    assert "SIGNALLED" not in text, text
    text = run_js(sandbox, f"try {{ process.kill({target}, 'SIGKILL'); console.log('SIGNALLED'); }} catch (e) {{ console.log('denied', e.code); }}")
    assert "denied ESRCH" in text, text
    time.sleep(0.2)
    assert witnesses.sleeper.poll() is None
    status = proc_status(target)
    assert status is not None and not status["State"].startswith("T"), "the host process was stopped"
    witnesses.check()


def test_kill_all_inside_is_refused(sandbox: Sandbox, witnesses: Witnesses) -> None:
    """``kill -9 -1`` would reach the supervisor (which enforces the timeouts): it is refused, nothing dies."""
    _, stdout, stderr = command(sandbox, "kill -9 -1; echo status $?")
    assert "Operation not permitted" in stderr and "status 1" in stdout, (stdout, stderr)
    assert sandbox.run_code("1 + 1").text == "2"
    witnesses.check()


def test_other_sandbox_processes_invisible(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    a, b = make_sandbox(), make_sandbox()
    a.commands.run("sleep 777.5", background=True)
    assert wait_until(lambda: any("777.5" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace") for pid in sandbox_pids(a)), 5)
    ps = command(b, "ps -eo pid,args; cat /proc/[0-9]*/cmdline | tr '\\0' ' '")[1]
    assert "777.5" not in ps, ps
    # B kills everything it can see; A's sleep survives.
    command(b, "kill -9 $(pgrep -f 777.5) 2>/dev/null; pkill -9 sleep; true")
    assert [p for p in a.commands.list() if "777.5" in p.args[-1]]
    assert a.run_code("1 + 1").text == "2"
    witnesses.check()


def test_other_sandbox_files_invisible(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    a, b = make_sandbox(), make_sandbox()
    secret = "sandcell-secret-" + secrets.token_hex(8)
    a.files.write("/home/user/secret.txt", secret)
    run_bash(a, f"echo {secret} > /tmp/secret.txt; echo {secret} > /dev/shm/secret.txt; mkdir -p /home/user/deep/er && echo {secret} > /home/user/deep/er/s")
    assert a.files.read("/tmp/secret.txt").strip() == secret
    for path in ("/home/user/secret.txt", "/tmp/secret.txt", "/dev/shm/secret.txt", "/home/user/deep"):
        assert not b.files.exists(path), path
        with pytest.raises(NotFoundException):
            b.files.read(path)
    # (split, so that the cell file holding this command does not match itself)
    head, tail = secret[:10], secret[10:]
    text = run_bash(b, f'grep -rs "{head}""{tail}" / --exclude-dir=proc --exclude-dir=usr && echo FOUND; true', timeout=25)
    assert "FOUND" not in text, text
    assert not Path("/tmp/secret.txt").exists() or secret not in Path("/tmp/secret.txt").read_text()
    assert not Path("/home/user/secret.txt").exists()
    witnesses.check()


# -- seccomp ----------------------------------------------------------------------------
SYSCALL_NUMBERS = {
    "x86_64": {
        "ptrace": 101,
        "mount": 165,
        "unshare": 272,
        "bpf": 321,
        "keyctl": 250,
        "perf_event_open": 298,
        "setns": 308,
        "io_uring_setup": 425,
        "userfaultfd": 323,
        "add_key": 248,
        "pivot_root": 155,
        "clone": 56,
        "clone3": 435,
        "process_vm_readv": 310,
    },
    "aarch64": {
        "ptrace": 117,
        "mount": 40,
        "unshare": 97,
        "bpf": 280,
        "keyctl": 219,
        "perf_event_open": 241,
        "setns": 268,
        "io_uring_setup": 425,
        "userfaultfd": 282,
        "add_key": 217,
        "pivot_root": 41,
        "clone": 220,
        "clone3": 435,
        "process_vm_readv": 270,
    },
}


@pytest.mark.skipif(platform.machine() not in SYSCALL_NUMBERS, reason="syscall numbers known for x86_64 and aarch64 only")
def test_seccomp_denies_dangerous_syscalls(sandbox: Sandbox, witnesses: Witnesses) -> None:
    numbers = SYSCALL_NUMBERS[platform.machine()]
    probe = f"""
    import ctypes, json, os
    NR = {numbers!r}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    L = ctypes.c_long
    def call(name, *args):
        ctypes.set_errno(0)
        conv = [ctypes.c_char_p(a) if isinstance(a, bytes) else L(a) for a in args]
        result = libc.syscall(L(NR[name]), *conv)
        return [result, ctypes.get_errno()]
    out = {{
        "ptrace_traceme": call("ptrace", 0, 0, 0, 0),
        "ptrace_attach_parent": call("ptrace", 16, os.getppid(), 0, 0),
        "mount": call("mount", b"none", b"/tmp", b"tmpfs", 0, 0),
        "unshare_user": call("unshare", 0x10000000),
        "unshare_mount": call("unshare", 0x00020000),
        "unshare_net": call("unshare", 0x40000000),
        "setns": call("setns", 0, 0),
        "bpf": call("bpf", 0, 0, 0),
        "keyctl": call("keyctl", 0, -3, 0),
        "add_key": call("add_key", b"user", b"x", 0, 0, -3),
        "perf_event_open": call("perf_event_open", 0, 0, -1, -1, 0),
        "io_uring_setup": call("io_uring_setup", 1, 0),
        "userfaultfd": call("userfaultfd", 0),
        "pivot_root": call("pivot_root", b"/tmp", b"/tmp"),
        "process_vm_readv": call("process_vm_readv", os.getppid(), 0, 0, 0, 0, 0),
    }}
    # clone() with namespace flags (SIGCHLD | flag); a child, if any, leaves at once.
    for name, flag in (("clone_newuser", 0x10000000), ("clone_newns", 0x00020000), ("clone_newpid", 0x20000000), ("clone_newnet", 0x40000000)):
        result = call("clone", 17 | flag, 0, 0, 0, 0)
        if result[0] == 0:
            os._exit(0)
        if result[0] > 0:
            os.waitpid(result[0], 0)
        out[name] = result
    out["clone3"] = call("clone3", 0, 0)
    print(json.dumps(out))
    """
    results = json.loads(run_py(sandbox, probe))
    for name, (value, code) in results.items():
        expected = errno.ENOSYS if name == "clone3" else errno.EPERM
        assert value == -1 and code == expected, f"{name} returned {value} (errno {code}), expected {errno.errorcode[expected]}"
    # The kernel still works (fork is a clone without namespace flags).
    assert run_py(sandbox, "import os\npid = os.fork()\nif pid == 0: os._exit(7)\nprint(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))") == "7\n"
    witnesses.check()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 ABIs only")
def test_seccomp_kills_other_abis(sandbox: Sandbox, witnesses: Witnesses) -> None:
    """32-bit (int 0x80) and x32 system calls bypass a filter written for x86_64 ones: they must kill."""
    script = textwrap.dedent(
        """
        import ctypes, mmap, sys
        if sys.argv[1] == "int80":
            code = bytes([0xB8, 0x14, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20 (getpid); int 0x80; ret
            buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            buf.write(code)
            address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
            print("ALIVE", ctypes.CFUNCTYPE(ctypes.c_long)(address)())
        else:
            libc = ctypes.CDLL(None, use_errno=True)
            print("ALIVE", libc.syscall(ctypes.c_long(0x40000000 | 39)))  # x32 getpid
        """
    )
    sandbox.files.write("/home/user/abi.py", script)
    for mode in ("int80", "x32"):
        code, stdout, _ = command(sandbox, f"python /home/user/abi.py {mode}")
        assert "ALIVE" not in stdout and code == 128 + signal.SIGSYS, (mode, code, stdout)
    witnesses.check()


def test_cannot_create_namespaces_with_tools(sandbox: Sandbox, witnesses: Witnesses) -> None:
    for cmd in (
        "unshare -r true",
        "unshare -U true",
        "unshare -rm true",
        "unshare -n true",
        "unshare -p -f true",
        "bwrap --ro-bind / / true",
        "nsenter -t 1 -a true",
    ):
        code, stdout, stderr = command(sandbox, cmd)
        assert code != 0, f"{cmd!r} succeeded: {stdout} {stderr}"
    witnesses.check()


# -- resource exhaustion ---------------------------------------------------------------------
@pytest.mark.slow
def test_fork_bomb_bash(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    sbx = make_sandbox(limits=Limits(pids=64))
    dirs = sbx.backend.process.cgroup.dirs
    started = time.monotonic()
    sbx.run_code(":(){ :|:& };:", language="bash", timeout=5)
    assert time.monotonic() - started < 5 + sbx.backend.policy.kill_grace + 5
    time.sleep(3)  # let it saturate
    assert len(sandbox_pids(sbx)) <= 64
    pids_v1 = sbx.backend.process.cgroup.v1.get("pids")
    if pids_v1:
        assert int((pids_v1 / "pids.current").read_text()) <= 64
    witnesses.check()
    # The existing kernel needs no new process: it still answers, if slowly.
    assert sbx.run_code("1 + 1", timeout=20).text == "2"
    pids = sandbox_pids(sbx)
    started = time.monotonic()
    sbx.kill()
    assert time.monotonic() - started < 10
    assert gone(pids, sbx.backend.process.host_uid)
    assert not any(path.exists() for path in dirs)
    assert host_pids_of_uid(sbx.backend.process.host_uid) == []
    witnesses.check()


@pytest.mark.slow
def test_fork_bomb_python(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    sbx = make_sandbox(limits=Limits(pids=64))
    dirs = sbx.backend.process.cgroup.dirs
    code = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.001)\n"
    started = time.monotonic()
    execution = sbx.run_code(code, timeout=5)
    elapsed = time.monotonic() - started
    assert elapsed < 5 + sbx.backend.policy.kill_grace + 5, elapsed
    assert execution.error is not None and execution.error.name == "TimeoutError", execution.error
    assert len(sandbox_pids(sbx)) <= 64
    witnesses.check()
    # The forked copies of the interpreter left when interrupted, rather than
    # answering requests as extra kernels; their zombies still count against
    # pids.max (as on any Linux) until the context restarts and pid 1 reaps them.
    context = next(c for c in sbx.list_code_contexts() if c.language == "python")
    sbx.restart_code_context(context)
    for _ in range(3):
        assert sbx.run_code("1 + 1", timeout=20).text == "2"
    assert sbx.commands.run("echo alive", timeout=20).stdout == "alive\n"
    pids = sandbox_pids(sbx)
    sbx.kill()
    assert gone(pids, sbx.backend.process.host_uid)
    assert not any(path.exists() for path in dirs)
    witnesses.check()


def test_forked_child_does_not_become_a_second_kernel(sandbox: Sandbox, witnesses: Witnesses) -> None:
    """A child forked by a cell that returns (no ``os._exit``) must not answer later requests."""
    run_py(sandbox, "import os\nkernel_pid = os.getpid()\nchild = os.fork()")
    for _ in range(6):
        assert run_py(sandbox, "print(os.getpid() == kernel_pid)") == "True\n"
    witnesses.check()


@pytest.mark.slow
def test_memory_bomb_python(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    sbx = make_sandbox(limits=Limits(memory_mb=256))
    run_py(sbx, "kept = 1")
    started = time.monotonic()
    execution = sbx.run_code("blocks = []\nwhile True:\n    blocks.append(b'x' * (16 << 20))", timeout=30)
    assert time.monotonic() - started < 30
    assert execution.error is not None and execution.error.name == "OutOfMemoryError", execution.error
    assert "256" in execution.error.value
    # Usable again: the interpreter restarted empty.
    after = sbx.run_code("1 + 1", timeout=20)
    assert after.error is None and after.text == "2"
    assert sbx.run_code("kept", timeout=20).error.name == "NameError"
    assert sbx.commands.run("echo alive", timeout=20).stdout == "alive\n"
    witnesses.check()


@pytest.mark.slow
def test_memory_bomb_javascript(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    sbx = make_sandbox(limits=Limits(memory_mb=256))
    started = time.monotonic()
    execution = sbx.run_code("const blocks = []; while (true) blocks.push(Buffer.alloc(16 << 20, 1));", language="javascript", timeout=30)
    assert time.monotonic() - started < 30
    assert execution.error is not None and execution.error.name == "OutOfMemoryError", execution.error
    assert run_js(sbx, "console.log(1 + 1)") == "2\n"
    witnesses.check()


@pytest.mark.slow
def test_disk_filling_loop(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    sbx = make_sandbox(limits=Limits(disk_mb=64))
    host_free = shutil.disk_usage("/").free
    host_tmp_free = shutil.disk_usage("/tmp").free
    text = run_py(
        sbx,
        """
        import errno, os
        block = b"x" * (1 << 20)
        written = 0
        try:
            for n in range(1000):
                with open(f"/home/user/fill{n}", "wb") as handle:
                    for _ in range(4):
                        handle.write(block)
                        handle.flush()
                        written += 1
        except OSError as exc:
            print(errno.errorcode[exc.errno], written)
        """,
        timeout=30,
    )
    code, mib = text.split()
    assert code == "ENOSPC", text
    assert 48 <= int(mib) <= 64, text
    # The host's disks did not take the data (tmpfs in the sandbox's memory).
    assert host_free - shutil.disk_usage("/").free < 32 << 20
    assert host_tmp_free - shutil.disk_usage("/tmp").free < 32 << 20
    # The files API reports the full disk, and works again after a cleanup.
    with pytest.raises(SandboxException):
        sbx.files.write("/home/user/more.bin", b"y" * (8 << 20))
    names = {entry.name for entry in sbx.files.list("/home/user")}
    assert "fill0" in names
    sbx.files.remove("/home/user/fill0")
    sbx.files.remove("/home/user/fill1")
    sbx.files.write("/home/user/after.txt", "fits again")
    assert sbx.files.read("/home/user/after.txt") == "fits again"
    # /tmp is a separate area: the sandbox's own work files there still work.
    assert sbx.run_code("echo bash-ok", language="bash", timeout=20).logs.stdout == ["bash-ok\n"]
    witnesses.check()


@pytest.mark.slow
def test_output_flood(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    sbx = make_sandbox(limits=Limits(output_mb=1))
    limit = 1 << 20
    rss_before = rss_bytes()
    started = time.monotonic()
    execution = sbx.run_code("import sys\nblock = ('x' * 1023 + '\\n') * 1024\nfor _ in range(110):\n    sys.stdout.write(block)\nprint('END')", timeout=30)
    assert time.monotonic() - started < 30
    assert execution.error is None, execution.error
    stdout, stderr = out(execution), err(execution)
    assert len(stdout) <= limit and len(stdout) >= limit - 65536
    assert "[sandcell: output truncated" in stderr
    assert len(stdout) + len(stderr) <= limit + 1024
    assert "END" not in stdout
    # A shell command and bash are capped the same way.
    result = sbx.commands.run("head -c 120000000 /dev/zero | tr '\\0' x", timeout=30)
    assert len(result.stdout) <= limit and "[sandcell: output truncated" in result.stderr
    execution = sbx.run_code("yes | head -c 120000000", language="bash", timeout=30)
    assert len(out(execution)) + len(err(execution)) <= limit + 1024
    assert rss_bytes() - rss_before < 64 << 20, "the host buffered the flood"
    assert sbx.run_code("print('still fine')").logs.stdout == ["still fine\n"]
    witnesses.check()


def test_command_timeout_covers_leftover_processes(sandbox: Sandbox, witnesses: Witnesses) -> None:
    """A command whose background leftovers keep its output open cannot outlive its timeout."""
    for cmd in ("sleep 61 & echo started", "setsid sleep 62 & echo started"):
        started = time.monotonic()
        with pytest.raises(TimeoutException):
            sandbox.commands.run(cmd, timeout=2)
        assert time.monotonic() - started < 8, cmd
    # The leftover in the command's process group was killed with it.
    assert "sleep 61" not in command(sandbox, "sleep 0.2; ps -eo args")[1]
    assert sandbox.commands.run("echo ok", timeout=10).stdout == "ok\n"
    witnesses.check()


# -- symlinks and the files API ---------------------------------------------------------------
def test_symlinks_do_not_reach_host_files(sandbox: Sandbox, witnesses: Witnesses) -> None:
    marker = str(witnesses.marker)
    run_bash(
        sandbox,
        f"""
        ln -s /etc/shadow /home/user/s
        ln -s /root /home/user/r
        ln -s / /home/user/root
        ln -s {marker} /home/user/evil
        ln -s /proc/1/root /home/user/init_root
        ln -s ../../../../../etc/shadow /home/user/rel
        """,
    )
    for link in ("/home/user/s", "/home/user/rel", "/home/user/root/etc/shadow", "../../etc/shadow", "/home/user/../../etc/shadow"):
        with pytest.raises(NotFoundException):
            sandbox.files.read(link)
    # pid 1 is bwrap (its root is the sandbox's) or a fork server's init, which is not dumpable.
    with pytest.raises((NotFoundException, InvalidArgumentException)):
        sandbox.files.read("/home/user/init_root/etc/shadow")
    with pytest.raises(NotFoundException):
        sandbox.files.list("/home/user/r")
    with pytest.raises(NotFoundException):
        sandbox.files.list("/home/user/r/.pyenv")
    names = {entry.name for entry in sandbox.files.list("/home/user/root")}
    assert "usr" in names and not names & {"root", "work", "var", "boot", "srv"}, names
    passwd = sandbox.files.read("/home/user/root/etc/passwd")
    assert passwd == Path("/opt/sandcell/etc/passwd").read_text(), "the sandbox read the host's /etc/passwd"
    # Writing through a link to a host path lands in the sandbox's own /tmp, never on the host.
    try:
        sandbox.files.write("/home/user/evil", "pwned")
    except SandboxException:
        pass
    try:
        sandbox.files.write(marker, "pwned")
    except SandboxException:
        pass
    with pytest.raises(SandboxException):
        sandbox.files.write("/home/user/s", "pwned")  # /etc is read-only in the sandbox
    assert witnesses.marker.read_text() == "host-original"
    # Renames and removes through links stay inside too.
    try:
        sandbox.files.rename("/home/user/evil", "/home/user/evil2")
        sandbox.files.remove("/home/user/root/etc/passwd")
    except SandboxException:
        pass
    info = sandbox.files.get_info("/home/user/s")
    assert info.name == "s"
    witnesses.check()


@pytest.mark.slow
def test_symlink_race_to_host_paths(sandbox: Sandbox, witnesses: Witnesses) -> None:
    """A link swapped between a directory and a host path while the files API works."""
    marker_dir = witnesses.marker.parent
    handle = sandbox.commands.run(
        f"mkdir -p /home/user/real; for i in $(seq 4000); do ln -sfn {marker_dir} /home/user/swap; ln -sfn /home/user/real /home/user/swap; done",
        background=True,
    )
    for _ in range(50):
        try:
            sandbox.files.write("/home/user/swap/host_marker", "pwned")
        except SandboxException:
            pass
    try:
        handle.wait()
    except CommandExitException:
        pass
    assert witnesses.marker.read_text() == "host-original"
    witnesses.check()


# -- kill and cleanup ------------------------------------------------------------------------
def gone(pids: set[int], host_uid: int) -> bool:
    return not any(alive_as(pid, host_uid) for pid in pids)


def test_kill_leaves_nothing(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    sbx = make_sandbox()
    sbx.commands.run("sleep 300", background=True)
    sbx.commands.run("setsid nohup sleep 301 >/dev/null 2>&1 & disown; (sleep 302 >/dev/null 2>&1 &) ; true", timeout=10)
    run_py(sbx, "import subprocess\nsubprocess.Popen(['sleep', '303'], start_new_session=True)")
    run_js(sbx, "1")
    process = sbx.backend.process
    pids, dirs, host_uid = sandbox_pids(sbx), process.cgroup.dirs, process.host_uid
    assert len(pids) >= 7, pids
    assert all(path.exists() for path in dirs)
    started = time.monotonic()
    sbx.kill()
    assert time.monotonic() - started < 10
    assert gone(pids, host_uid), [pid for pid in pids if alive_as(pid, host_uid)]
    assert not any(path.exists() for path in dirs), dirs
    assert host_pids_of_uid(host_uid) == []
    assert not process.alive, "the launcher is still running"
    assert not sbx.is_running()
    with pytest.raises(SandboxException):
        sbx.run_code("1")
    witnesses.check()


def test_sandbox_timeout_kills_everything(make_sandbox: Callable[..., Sandbox], witnesses: Witnesses) -> None:
    sbx = make_sandbox(timeout=3)
    sbx.commands.run("setsid sleep 300 >/dev/null 2>&1 &", timeout=10)
    process = sbx.backend.process
    pids, dirs = sandbox_pids(sbx), process.cgroup.dirs
    assert wait_until(lambda: gone(pids, process.host_uid) and not any(path.exists() for path in dirs), 10)
    assert not sbx.is_running()
    witnesses.check()


OWNER_SCRIPT = """
import json, os, sys, time
from sandcell import Sandbox
sbx = Sandbox.create(timeout=120)
sbx.commands.run("sleep 888", background=True)
sbx.commands.run("setsid nohup sleep 889 >/dev/null 2>&1 &", timeout=10)
sbx.run_code("x = 1")
sbx.run_code("1", language="javascript")
process = sbx.backend.process
print(json.dumps({"dirs": [str(d) for d in process.cgroup.dirs], "pids": sorted(process.cgroup.pids()),
                  "host_uid": process.host_uid, "launcher": process.launcher_pid}), flush=True)
if sys.argv[1] == "exit":
    os._exit(0)
time.sleep(120)
"""


@pytest.mark.parametrize("death", ["exit", "sigkill"])
def test_owner_death_cleans_up(death: str, witnesses: Witnesses) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, death], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([owner.stdout], [], [], 30)
        assert ready, "the owner process did not start its sandbox"
        line = owner.stdout.readline()
        assert line, owner.stderr.read()
        info = json.loads(line)
        pids, dirs, host_uid = set(info["pids"]), [Path(d) for d in info["dirs"]], info["host_uid"]
        assert len(pids) >= 5 and all(real_uid(pid) == host_uid for pid in pids)
        if death == "sigkill":
            owner.kill()
        owner.wait(10)
        assert wait_until(lambda: gone(pids, host_uid), 5), [pid for pid in pids if alive_as(pid, host_uid)]
        assert wait_until(lambda: not any(path.exists() for path in dirs), 5), dirs
        assert wait_until(lambda: proc_status(info["launcher"]) is None, 5), "the launcher outlived its owner"
        assert host_pids_of_uid(host_uid) == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    witnesses.check()
