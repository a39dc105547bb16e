"""Functional tests of ``sandbox.files`` and ``sandbox.commands`` on real sandboxes."""

from __future__ import annotations

import datetime
import io
import os
import threading
import time
import uuid

import pytest

from sandcell import (
    CommandExitException,
    CommandHandle,
    CommandResult,
    EntryInfo,
    FileType,
    InvalidArgumentException,
    NotFoundException,
    ProcessInfo,
    Sandbox,
    SandboxException,
    TimeoutException,
    WriteInfo,
)

HOME = "/home/user"


@pytest.fixture
def sbx(make_sandbox):
    return make_sandbox(scope="module", timeout=600, envs={"SBX_LEVEL": "from-sandbox"})


@pytest.fixture
def tmpdir_in(sbx):
    """A fresh directory under /home/user, removed afterwards."""
    path = f"{HOME}/t_{uuid.uuid4().hex[:8]}"
    assert sbx.files.make_dir(path) is True
    yield path
    try:
        sbx.files.remove(path)
    except SandboxException:
        pass


# -- files ---------------------------------------------------------------------------
class TestWriteRead:
    def test_text_round_trip(self, sbx, tmpdir_in):
        path = f"{tmpdir_in}/hello.txt"
        info = sbx.files.write(path, "hello\nwörld 日本 🎉\n")
        assert isinstance(info, WriteInfo)
        assert info.path == path and info.name == "hello.txt" and info.type == FileType.FILE
        assert sbx.files.read(path) == "hello\nwörld 日本 🎉\n"
        assert sbx.files.read(path, format="text") == "hello\nwörld 日本 🎉\n"
        assert sbx.files.read(path, format="bytes") == "hello\nwörld 日本 🎉\n".encode()

    def test_bytes_round_trip_all_byte_values(self, sbx, tmpdir_in):
        data = bytes(range(256)) * 17
        sbx.files.write(f"{tmpdir_in}/all.bin", data)
        read = sbx.files.read(f"{tmpdir_in}/all.bin", format="bytes")
        assert isinstance(read, bytes) and read == data

    def test_large_binary_round_trip(self, sbx, tmpdir_in):
        data = os.urandom(20 * 1024 * 1024 + 12345)
        path = f"{tmpdir_in}/big.bin"
        sbx.files.write(path, data)
        assert sbx.files.get_info(path).size == len(data)
        read = sbx.files.read(path, format="bytes")
        assert len(read) == len(data)
        assert read == data
        # The sandbox sees the same bytes.
        digest = sbx.commands.run(f"sha256sum {path}").stdout.split()[0]
        import hashlib

        assert digest == hashlib.sha256(data).hexdigest()

    def test_write_file_object(self, sbx, tmpdir_in):
        sbx.files.write(f"{tmpdir_in}/from_bytesio", io.BytesIO(b"\x00binary\xff"))
        sbx.files.write(f"{tmpdir_in}/from_stringio", io.StringIO("text io"))
        assert sbx.files.read(f"{tmpdir_in}/from_bytesio", format="bytes") == b"\x00binary\xff"
        assert sbx.files.read(f"{tmpdir_in}/from_stringio") == "text io"

    def test_empty_file(self, sbx, tmpdir_in):
        sbx.files.write(f"{tmpdir_in}/empty", b"")
        assert sbx.files.read(f"{tmpdir_in}/empty") == ""
        assert sbx.files.read(f"{tmpdir_in}/empty", format="bytes") == b""
        assert sbx.files.get_info(f"{tmpdir_in}/empty").size == 0

    def test_overwrite_truncates(self, sbx, tmpdir_in):
        path = f"{tmpdir_in}/over.txt"
        sbx.files.write(path, "a long first version")
        sbx.files.write(path, "short")
        assert sbx.files.read(path) == "short"

    def test_write_creates_parent_directories(self, sbx, tmpdir_in):
        path = f"{tmpdir_in}/a/b/c/deep.txt"
        sbx.files.write(path, "deep")
        assert sbx.files.read(path) == "deep"
        assert sbx.files.get_info(f"{tmpdir_in}/a/b").type == FileType.DIR

    def test_relative_paths_resolve_under_home(self, sbx):
        name = f"rel_{uuid.uuid4().hex[:6]}"
        info = sbx.files.write(f"{name}/file.txt", "relative")
        try:
            assert info.path == f"{HOME}/{name}/file.txt"
            assert sbx.files.read(f"{HOME}/{name}/file.txt") == "relative"
            assert sbx.files.read(f"{name}/file.txt") == "relative"
            assert sbx.files.read(f"~/{name}/file.txt") == "relative"
            assert sbx.files.exists(f"./{name}/file.txt")
        finally:
            sbx.files.remove(name)

    def test_unicode_file_name(self, sbx, tmpdir_in):
        path = f"{tmpdir_in}/données 日本.txt"
        sbx.files.write(path, "x")
        assert [e.name for e in sbx.files.list(tmpdir_in)] == ["données 日本.txt"]
        assert sbx.files.read(path) == "x"

    def test_read_missing_file(self, sbx, tmpdir_in):
        with pytest.raises(NotFoundException):
            sbx.files.read(f"{tmpdir_in}/does-not-exist")
        with pytest.raises(NotFoundException):
            sbx.files.read(f"{tmpdir_in}/no/such/dir/file", format="bytes")

    def test_read_directory_is_an_error(self, sbx, tmpdir_in):
        with pytest.raises(SandboxException) as info:
            sbx.files.read(tmpdir_in)
        assert not isinstance(info.value, NotFoundException)
        assert "directory" in str(info.value)

    def test_write_over_a_directory_is_an_error(self, sbx, tmpdir_in):
        sbx.files.make_dir(f"{tmpdir_in}/adir")
        with pytest.raises(SandboxException):
            sbx.files.write(f"{tmpdir_in}/adir", "x")
        assert sbx.files.get_info(f"{tmpdir_in}/adir").type == FileType.DIR

    def test_bad_format(self, sbx, tmpdir_in):
        with pytest.raises(InvalidArgumentException):
            sbx.files.read(f"{tmpdir_in}/x", format="json")  # type: ignore[arg-type]

    def test_bad_data_type(self, sbx, tmpdir_in):
        with pytest.raises(InvalidArgumentException):
            sbx.files.write(f"{tmpdir_in}/x", 12345)  # type: ignore[arg-type]

    def test_read_only_system_paths(self, sbx):
        assert "root" in sbx.files.read("/etc/passwd")
        with pytest.raises(SandboxException):
            sbx.files.write("/usr/sandcell_should_not_write", "x")


class TestListExistsRemove:
    def test_list_depth(self, sbx, tmpdir_in):
        sbx.files.write(f"{tmpdir_in}/top.txt", "1")
        sbx.files.write(f"{tmpdir_in}/d1/mid.txt", "22")
        sbx.files.write(f"{tmpdir_in}/d1/d2/low.txt", "333")

        shallow = sbx.files.list(tmpdir_in)
        assert all(isinstance(e, EntryInfo) for e in shallow)
        assert sorted((e.name, e.type) for e in shallow) == [("d1", FileType.DIR), ("top.txt", FileType.FILE)]
        assert {e.path for e in shallow} == {f"{tmpdir_in}/top.txt", f"{tmpdir_in}/d1"}

        two = {e.path for e in sbx.files.list(tmpdir_in, depth=2)}
        assert two == {f"{tmpdir_in}/top.txt", f"{tmpdir_in}/d1", f"{tmpdir_in}/d1/mid.txt", f"{tmpdir_in}/d1/d2"}

        three = {e.path: e for e in sbx.files.list(tmpdir_in, depth=3)}
        assert set(three) == two | {f"{tmpdir_in}/d1/d2/low.txt"}
        assert three[f"{tmpdir_in}/d1/d2/low.txt"].size == 3

    def test_list_empty_dir(self, sbx, tmpdir_in):
        assert sbx.files.list(tmpdir_in) == []

    def test_list_errors(self, sbx, tmpdir_in):
        with pytest.raises(NotFoundException):
            sbx.files.list(f"{tmpdir_in}/missing")
        sbx.files.write(f"{tmpdir_in}/file", "x")
        with pytest.raises(SandboxException):
            sbx.files.list(f"{tmpdir_in}/file")
        with pytest.raises(InvalidArgumentException):
            sbx.files.list(tmpdir_in, depth=0)

    def test_exists(self, sbx, tmpdir_in):
        assert sbx.files.exists(tmpdir_in) is True
        assert sbx.files.exists(f"{tmpdir_in}/nope") is False
        sbx.files.write(f"{tmpdir_in}/yes", "")
        assert sbx.files.exists(f"{tmpdir_in}/yes") is True

    def test_remove_file_and_dir(self, sbx, tmpdir_in):
        sbx.files.write(f"{tmpdir_in}/f.txt", "x")
        sbx.files.remove(f"{tmpdir_in}/f.txt")
        assert not sbx.files.exists(f"{tmpdir_in}/f.txt")

        sbx.files.write(f"{tmpdir_in}/tree/a/b.txt", "x")
        sbx.files.write(f"{tmpdir_in}/tree/c.txt", "x")
        sbx.files.remove(f"{tmpdir_in}/tree")
        assert not sbx.files.exists(f"{tmpdir_in}/tree")
        assert sbx.files.list(tmpdir_in) == []

    def test_remove_missing(self, sbx, tmpdir_in):
        with pytest.raises(NotFoundException):
            sbx.files.remove(f"{tmpdir_in}/never-was")

    def test_remove_symlink_keeps_target(self, sbx, tmpdir_in):
        sbx.files.write(f"{tmpdir_in}/target/keep.txt", "kept")
        sbx.commands.run(f"ln -s {tmpdir_in}/target {tmpdir_in}/link")
        info = sbx.files.get_info(f"{tmpdir_in}/link")
        assert info.symlink_target == f"{tmpdir_in}/target"
        sbx.files.remove(f"{tmpdir_in}/link")
        assert not sbx.files.exists(f"{tmpdir_in}/link")
        assert sbx.files.read(f"{tmpdir_in}/target/keep.txt") == "kept"

    def test_make_dir_twice(self, sbx, tmpdir_in):
        assert sbx.files.make_dir(f"{tmpdir_in}/new/nested") is True
        assert sbx.files.make_dir(f"{tmpdir_in}/new/nested") is False
        assert sbx.files.get_info(f"{tmpdir_in}/new/nested").type == FileType.DIR

    def test_make_dir_over_a_file(self, sbx, tmpdir_in):
        sbx.files.write(f"{tmpdir_in}/plain", "x")
        with pytest.raises(SandboxException):
            sbx.files.make_dir(f"{tmpdir_in}/plain")

    def test_rename(self, sbx, tmpdir_in):
        sbx.files.write(f"{tmpdir_in}/old.txt", "content")
        entry = sbx.files.rename(f"{tmpdir_in}/old.txt", f"{tmpdir_in}/moved/new.txt")
        assert isinstance(entry, EntryInfo)
        assert entry.path == f"{tmpdir_in}/moved/new.txt" and entry.name == "new.txt" and entry.type == FileType.FILE
        assert not sbx.files.exists(f"{tmpdir_in}/old.txt")
        assert sbx.files.read(f"{tmpdir_in}/moved/new.txt") == "content"

    def test_rename_directory(self, sbx, tmpdir_in):
        sbx.files.write(f"{tmpdir_in}/src_dir/inner.txt", "in")
        entry = sbx.files.rename(f"{tmpdir_in}/src_dir", f"{tmpdir_in}/dst_dir")
        assert entry.type == FileType.DIR
        assert sbx.files.read(f"{tmpdir_in}/dst_dir/inner.txt") == "in"

    def test_rename_missing(self, sbx, tmpdir_in):
        with pytest.raises(NotFoundException):
            sbx.files.rename(f"{tmpdir_in}/ghost", f"{tmpdir_in}/ghost2")

    def test_get_info_fields(self, sbx, tmpdir_in):
        path = f"{tmpdir_in}/info.txt"
        before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=30)
        sbx.files.write(path, "12345")
        sbx.commands.run(f"chmod 640 {path}")
        info = sbx.files.get_info(path)
        assert info.name == "info.txt"
        assert info.path == path
        assert info.type == FileType.FILE
        assert info.size == 5
        assert info.mode == 0o640
        assert info.permissions == "-rw-r-----"
        assert info.owner == "user" and info.group, (info.owner, info.group)
        assert isinstance(info.modified_time, datetime.datetime) and info.modified_time.tzinfo is not None
        assert before < info.modified_time < datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
        assert info.symlink_target is None

        directory = sbx.files.get_info(tmpdir_in)
        assert directory.type == FileType.DIR and directory.permissions.startswith("d")
        with pytest.raises(NotFoundException):
            sbx.files.get_info(f"{tmpdir_in}/missing")


class TestFilesAndCode:
    def test_api_writes_code_reads(self, sbx, tmpdir_in):
        sbx.files.write(f"{tmpdir_in}/from_api.txt", "written by the API")
        execution = sbx.run_code(f"open({f'{tmpdir_in}/from_api.txt'!r}).read()")
        assert execution.text == "written by the API"
        js = sbx.run_code(f"require('fs').readFileSync({f'{tmpdir_in}/from_api.txt'!r}, 'utf8')", language="javascript")
        assert js.text == "written by the API"
        assert sbx.commands.run(f"cat {tmpdir_in}/from_api.txt").stdout == "written by the API"

    def test_code_writes_api_reads(self, sbx, tmpdir_in):
        assert sbx.run_code(f"open({f'{tmpdir_in}/py.bin'!r}, 'wb').write(bytes(range(256)))").error is None
        assert sbx.files.read(f"{tmpdir_in}/py.bin", format="bytes") == bytes(range(256))
        sbx.run_code(f"echo from bash > {tmpdir_in}/sh.txt", language="bash")
        assert sbx.files.read(f"{tmpdir_in}/sh.txt") == "from bash\n"

    def test_relative_paths_match_code_working_directory(self, sbx):
        name = f"rel_code_{uuid.uuid4().hex[:6]}.txt"
        try:
            sbx.run_code(f"open({name!r}, 'w').write('cwd-relative')")
            assert sbx.files.read(name) == "cwd-relative"
        finally:
            sbx.files.remove(name)


# -- commands --------------------------------------------------------------------------
class TestForegroundCommands:
    def test_stdout_stderr_exit_code(self, sbx):
        result = sbx.commands.run("echo out; echo err >&2")
        assert isinstance(result, CommandResult)
        assert result.stdout == "out\n"
        assert result.stderr == "err\n"
        assert result.exit_code == 0

    def test_nonzero_exit_raises(self, sbx):
        with pytest.raises(CommandExitException) as info:
            sbx.commands.run("echo partial; echo oops >&2; exit 3")
        error = info.value
        assert isinstance(error, CommandResult)
        assert error.exit_code == 3
        assert error.stdout == "partial\n"
        assert error.stderr == "oops\n"
        assert "3" in str(error)

    def test_command_not_found(self, sbx):
        with pytest.raises(CommandExitException) as info:
            sbx.commands.run("definitely-not-a-command-xyz")
        assert info.value.exit_code == 127

    def test_default_cwd_is_home(self, sbx):
        assert sbx.commands.run("pwd").stdout == f"{HOME}\n"

    def test_cwd(self, sbx, tmpdir_in):
        assert sbx.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
        assert sbx.commands.run("pwd", cwd=tmpdir_in).stdout == f"{tmpdir_in}\n"
        relative = tmpdir_in.rsplit("/", 1)[1]
        assert sbx.commands.run("pwd", cwd=relative).stdout == f"{tmpdir_in}\n"

    def test_missing_cwd(self, sbx):
        with pytest.raises(NotFoundException):
            sbx.commands.run("pwd", cwd="/no/such/dir")

    def test_envs(self, sbx):
        result = sbx.commands.run("echo $ONE $TWO $SBX_LEVEL", envs={"ONE": "1", "TWO": "two words"})
        assert result.stdout == "1 two words from-sandbox\n"
        assert sbx.commands.run("echo ${ONE:-unset}").stdout == "unset\n"
        assert sbx.commands.run("echo $SBX_LEVEL", envs={"SBX_LEVEL": "override"}).stdout == "override\n"

    def test_invalid_env_name(self, sbx):
        with pytest.raises(InvalidArgumentException):
            sbx.commands.run("true", envs={"1BAD": "x"})

    def test_empty_command(self, sbx):
        with pytest.raises(InvalidArgumentException):
            sbx.commands.run("   ")

    def test_shell_features(self, sbx):
        assert sbx.commands.run("for i in 1 2 3; do echo -n $i; done | rev").stdout == "321"
        assert sbx.commands.run("echo $HOME $USER").stdout == f"{HOME} user\n"

    def test_on_stdout_streams(self, sbx):
        first: list[float] = []
        chunks: list[str] = []
        errors: list[str] = []

        def on_stdout(text: str) -> None:
            if not first:
                first.append(time.monotonic())
            chunks.append(text)

        result = sbx.commands.run("echo one; echo warn >&2; sleep 1.5; echo two", on_stdout=on_stdout, on_stderr=errors.append)
        returned = time.monotonic()
        assert first and returned - first[0] > 1.0, "on_stdout should fire while the command runs"
        assert "".join(chunks) == "one\ntwo\n" == result.stdout
        assert "".join(errors) == "warn\n"
        assert all(isinstance(c, str) for c in chunks)

    def test_large_output(self, sbx):
        result = sbx.commands.run("seq 1 200000")
        assert result.stdout == "".join(f"{i}\n" for i in range(1, 200001))

    def test_unicode_split_across_chunks(self, sbx):
        result = sbx.commands.run("printf '\\xe6'; sleep 0.2; printf '\\x97\\xa5 \\xf0\\x9f'; sleep 0.2; printf '\\x8e\\x89\\n'")
        assert result.stdout == "日 🎉\n"

    def test_timeout(self, sbx):
        started = time.monotonic()
        with pytest.raises(TimeoutException):
            sbx.commands.run("sleep 100", timeout=1)
        assert time.monotonic() - started < 5
        # The sandbox is fine afterwards, and the command is gone.
        assert sbx.commands.run("echo ok").stdout == "ok\n"
        assert not any(p.cmd == "sleep 100" for p in sbx.commands.list())

    def test_timeout_kills_what_the_command_left_behind(self, sbx):
        started = time.monotonic()
        with pytest.raises(TimeoutException):
            sbx.commands.run("sleep 77 & echo started; wait", timeout=1)
        assert time.monotonic() - started < 5
        ps = sbx.commands.run("ps -eo args").stdout
        assert "sleep 77" not in ps

    def test_stdin_is_empty_for_foreground(self, sbx):
        assert sbx.commands.run("cat; echo end", timeout=10).stdout == "end\n"


class TestBackgroundCommands:
    def test_background_and_wait(self, sbx):
        handle = sbx.commands.run("sleep 0.5; echo done; echo e >&2", background=True)
        assert isinstance(handle, CommandHandle)
        assert isinstance(handle.pid, int) and handle.pid > 0
        result = handle.wait()
        assert result.stdout == "done\n" and result.stderr == "e\n" and result.exit_code == 0

    def test_background_returns_immediately(self, sbx):
        started = time.monotonic()
        handle = sbx.commands.run("sleep 2", background=True)
        assert time.monotonic() - started < 1.5
        handle.kill()
        with pytest.raises(CommandExitException):
            handle.wait()

    def test_wait_twice_returns_the_same_result(self, sbx):
        handle = sbx.commands.run("echo once", background=True)
        first = handle.wait()
        second: list = []
        thread = threading.Thread(target=lambda: second.append(handle.wait()), daemon=True)
        thread.start()
        thread.join(5)
        assert not thread.is_alive(), "a second CommandHandle.wait() hangs forever (sync.py: wait() should keep and return the result of the first)"
        assert second[0].stdout == first.stdout == "once\n"

    def test_background_nonzero_exit(self, sbx):
        handle = sbx.commands.run("echo x; exit 5", background=True)
        with pytest.raises(CommandExitException) as info:
            handle.wait()
        assert info.value.exit_code == 5 and info.value.stdout == "x\n"

    def test_wait_with_callbacks(self, sbx):
        handle = sbx.commands.run("for i in 1 2 3; do echo $i; sleep 0.1; done", background=True)
        seen: list[str] = []
        result = handle.wait(on_stdout=seen.append)
        # Output before wait() was called is in the result, but only later chunks go to the callback.
        assert result.stdout == "1\n2\n3\n"
        assert "".join(seen) in ("1\n2\n3\n", "2\n3\n", "3\n", "")

    def test_background_kill(self, sbx):
        handle = sbx.commands.run("echo started; sleep 100", background=True)
        time.sleep(0.3)
        assert handle.kill() is True
        with pytest.raises(CommandExitException) as info:
            handle.wait()
        assert info.value.exit_code != 0
        assert info.value.exit_code == 137
        assert "SIGKILL" in (info.value.error or "")
        assert info.value.stdout == "started\n"
        assert handle.kill() is False  # already gone

    def test_commands_list_and_kill_by_pid(self, sbx):
        handle = sbx.commands.run("sleep 55", background=True, cwd="/tmp", envs={"X": "1"})
        try:
            listed = {p.pid: p for p in sbx.commands.list()}
            assert handle.pid in listed
            info = listed[handle.pid]
            assert isinstance(info, ProcessInfo)
            assert (info.cmd, info.args, info.cwd, info.envs) == ("/bin/bash", ["-l", "-c", "sleep 55"], "/tmp", {"X": "1"})
            assert sbx.commands.kill(handle.pid) is True
            with pytest.raises(CommandExitException):
                handle.wait()
            assert handle.pid not in {p.pid for p in sbx.commands.list()}
        finally:
            sbx.commands.kill(handle.pid)

    def test_kill_unknown_pid(self, sbx):
        assert sbx.commands.kill(999999) is False

    def test_kill_also_kills_children(self, sbx):
        handle = sbx.commands.run("sleep 66 & sleep 67; wait", background=True)
        time.sleep(0.3)
        handle.kill()
        with pytest.raises(CommandExitException):
            handle.wait()
        time.sleep(0.2)
        ps = sbx.commands.run("ps -eo args").stdout
        assert "sleep 66" not in ps and "sleep 67" not in ps

    def test_stdin_cat(self, sbx):
        handle = sbx.commands.run("cat", background=True)
        handle.send_stdin("hello\n")
        handle.send_stdin(b"bytes \xe6\x97\xa5\n")
        handle.close_stdin()
        result = handle.wait()
        assert result.stdout == "hello\nbytes 日\n"

    def test_stdin_read_line(self, sbx):
        handle = sbx.commands.run('read -r name; echo "hello $name"', background=True)
        time.sleep(0.2)
        sbx.commands.send_stdin(handle.pid, "sandcell\n")
        assert handle.wait().stdout == "hello sandcell\n"

    def test_stdin_interactive_round_trip(self, sbx):
        handle = sbx.commands.run('while read -r line; do echo "got:$line"; done', background=True)
        seen: list[str] = []
        done = threading.Event()

        def waiter():
            seen.append(handle.wait(on_stdout=seen.append).stdout)
            done.set()

        thread = threading.Thread(target=waiter)
        thread.start()
        handle.send_stdin("a\n")
        handle.send_stdin("b\n")
        handle.close_stdin()
        assert done.wait(10)
        thread.join()
        assert seen[-1] == "got:a\ngot:b\n"

    def test_stdin_to_exited_command(self, sbx):
        handle = sbx.commands.run("true", background=True)
        handle.wait()
        with pytest.raises(NotFoundException):
            handle.send_stdin("late\n")

    def test_stdin_disabled(self, sbx):
        handle = sbx.commands.run("sleep 5", background=True, stdin=False)
        try:
            with pytest.raises(SandboxException):
                handle.send_stdin("x")
        finally:
            handle.kill()

    def test_background_timeout(self, sbx):
        handle = sbx.commands.run("sleep 100", background=True, timeout=1)
        started = time.monotonic()
        with pytest.raises(TimeoutException):
            handle.wait()
        assert time.monotonic() - started < 5

    def test_background_survives_while_code_runs(self, sbx):
        handle = sbx.commands.run("sleep 1; echo bg-done", background=True)
        assert sbx.run_code("import time; time.sleep(0.2); 'code'").text == "code"
        assert handle.wait().stdout == "bg-done\n"

    def test_many_concurrent_commands(self, sbx):
        handles = [sbx.commands.run(f"sleep 0.3; echo {i}", background=True) for i in range(10)]
        assert len({h.pid for h in handles}) == 10
        assert [h.wait().stdout for h in handles] == [f"{i}\n" for i in range(10)]


def test_killed_sandbox_refuses_files_and_commands():
    sandbox = Sandbox.create(timeout=60)
    sandbox.kill()
    with pytest.raises(SandboxException):
        sandbox.files.read("/etc/passwd")
    with pytest.raises(SandboxException):
        sandbox.commands.run("true")
