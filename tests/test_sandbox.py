"""The code sandbox: hostile programs are contained, scored as failures, and the run goes on."""

from __future__ import annotations

import os
import socket
import textwrap

import pytest

from specbench.errors import SpecbenchError
from specbench.tasks.sandbox import SandboxLimits, run_python

# Short limits keep the suite fast; the defaults are lm-eval's 3 s.
QUICK = SandboxLimits(timeout_s=2.0, cpu_s=2, memory_bytes=512 << 20, file_size_bytes=1 << 20, processes=8)


def run(program: str, **kwargs):
    return run_python(textwrap.dedent(program), limits=QUICK, allow_code_execution=True, **kwargs)


def processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


def test_refuses_without_opt_in():
    with pytest.raises(SpecbenchError, match="allow_code_execution"):
        run_python("print(1)")


def test_exit_status_decides_pass_and_protections_are_recorded():
    good, bad = run("assert 1 + 1 == 2"), run("assert 1 + 1 == 3")
    assert (good.passed, good.status) == (True, "passed")
    assert (bad.passed, bad.status) == (False, "failed") and "AssertionError" in bad.stderr
    for key in ("own_process", "fresh_temp_dir", "throwaway_home", "scrubbed_env", "wall_timeout_s",
                "rlimit_cpu_s", "rlimit_as_bytes", "rlimit_fsize_bytes", "rlimit_nproc", "network_namespace"):
        assert key in good.protections
    assert good.protections["rlimit_fsize_bytes"] == QUICK.file_size_bytes


def test_environment_is_scrubbed_and_home_is_throwaway(monkeypatch):
    monkeypatch.setenv("SPECBENCH_SECRET_TOKEN", "hunter2")
    result = run("""
        import os, sys
        assert "SPECBENCH_SECRET_TOKEN" not in os.environ, "leaked"
        assert os.environ["HOME"].startswith(os.getcwd()), os.environ["HOME"]
        open(os.path.join(os.environ["HOME"], "note"), "w").write("mine")
    """)
    assert result.passed, result.stderr


def test_infinite_loop_times_out_and_next_program_still_runs():
    looping = run("while True:\n    pass")
    assert not looping.passed and looping.status in ("timeout", "killed")
    assert looping.duration_s < QUICK.timeout_s + 2
    sleeping = run("import time\ntime.sleep(60)")
    assert sleeping.status == "timeout"
    assert run("print('still here')").passed


def test_fork_storm_is_bounded_and_leaves_no_process():
    result = run("""
        import os
        while True:
            os.fork()
    """)
    assert not result.passed
    uid = result.protections.get("unprivileged_uid")
    if uid is not None:
        assert processes_of(uid) == []  # every descendant was reaped
    assert run("print('machine still usable')").passed


def test_fork_count_never_exceeds_the_process_limit():
    if "unprivileged_uid" not in run("pass").protections:
        pytest.skip("not root: RLIMIT_NPROC counts all of the caller's processes, not this sample's")
    result = run("""
        import os, time
        children = 0
        try:
            for _ in range(200):
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                children += 1
        except OSError:
            pass
        print(children)
        raise SystemExit(1)
    """)
    assert int(result.stdout.strip()) < QUICK.processes
    assert processes_of(result.protections["unprivileged_uid"]) == []


def test_escaped_daemon_is_killed_after_the_sample():
    result = run("""
        import os, time
        if os.fork() == 0:
            os.setsid()  # leave the process group the timeout kills
            time.sleep(120)
            os._exit(0)
    """)
    assert result.passed  # the sample itself exited 0
    uid = result.protections.get("unprivileged_uid")
    if uid is None:
        pytest.skip("not root: no private uid to reap by")
    assert processes_of(uid) == []


def test_memory_hog_is_stopped():
    result = run("""
        hog = []
        while True:
            hog.append(bytearray(32 << 20))
    """)
    assert not result.passed
    assert "MemoryError" in result.stderr or result.status in ("killed", "timeout")


def test_huge_file_write_is_cut_at_the_size_limit():
    result = run("""
        with open("big.bin", "wb") as handle:
            handle.write(b"x" * (64 << 20))
    """)
    assert not result.passed
    assert "File too large" in result.stderr or result.status == "killed"


def test_cannot_read_or_delete_files_outside_its_directory(tmp_path):
    if "unprivileged_uid" not in run("pass").protections:
        pytest.skip("not root: the sample runs as the calling user and can reach that user's files")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    secret.chmod(0o600)
    keep = tmp_path / "keep.txt"
    keep.write_text("keep me")
    reader = run(f"print(open({str(secret)!r}).read())")
    assert not reader.passed and "TOP-SECRET-42" not in reader.stdout
    deleter = run(f"import os\nos.remove({str(keep)!r})")
    assert not deleter.passed and keep.read_text() == "keep me"


def _listen_on_loopback() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    return server


CONNECT = """
import socket
socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"leak")
"""


def test_network_connection_is_refused():
    if not run("pass").protections.get("network_namespace"):
        pytest.skip("this system does not allow a new network namespace")
    with _listen_on_loopback() as server:
        result = run(CONNECT.format(port=server.getsockname()[1]))
        with pytest.raises(socket.timeout):
            server.accept()
    assert not result.passed


def test_network_check_detects_an_open_network():
    """The planted bug: with the namespace switched off the same probe gets through, so the test above can fail."""
    with _listen_on_loopback() as server:
        result = run(CONNECT.format(port=server.getsockname()[1]), cut_network=False)
        connection, _ = server.accept()
        connection.close()
    assert result.passed
    assert result.protections["network_namespace"] is False
