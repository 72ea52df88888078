"""Supervise one untrusted program: isolate it, limit it, time it, and clean up after it.

Run by `specbench.tasks.sandbox` as `python -I -S _sandbox_launcher.py SPEC_JSON`, never
imported. Standard library only (and -S: no site-packages) because it keeps the
caller's privileges while it supervises.

  launcher (caller's uid; a child subreaper, so orphans of the program come back here)
    - enters a new network namespace (needs root, or a user namespace);
    - lowers resource limits (inherited by everything below);
    - forks the program: own process group, unused uid when we are root, exec;
    - waits for it up to the wall-clock timeout, then SIGKILLs its process group;
    - kills whatever the program left behind (kill(-1) from the program's uid reaches
      exactly its processes, even those that left the group with setsid(); then every
      remaining child of ours) and reaps the zombies;
    - reports what was in force and how the program ended as JSON on a pipe the
      program never sees (closed before its exec).
"""

import ctypes
import errno
import json
import os
import resource
import signal
import sys
import time

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


def _call(function, *args) -> str | None:
    """A libc call; None on success, else the error text (os.unshare only exists from Python 3.12)."""
    if function(*args) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def _set_limits(limits: dict, nproc: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))  # SIGXCPU, then SIGKILL
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _processes(predicate) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
                if predicate(int(entry), fields, os.stat(f"/proc/{entry}").st_uid):
                    found.append(int(entry))
            except (OSError, IndexError):
                pass
    return found


def _kill_uid(uid: int) -> None:
    """Fork a child that becomes `uid` and SIGKILLs all of that uid's processes until none is left."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(1000):
                os.kill(-1, signal.SIGKILL)  # never reaches us: the caller is excluded
        except OSError as error:
            os._exit(0 if error.errno == errno.ESRCH else 1)
        os._exit(1)
    os.waitpid(pid, 0)


def _kill_and_reap_children() -> None:
    """SIGKILL every child (the program's orphans are reparented to us) and reap, until none is left."""
    me = os.getpid()
    while True:
        for pid in _processes(lambda pid, fields, uid: int(fields[1]) == me and fields[0] != b"Z"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


class _WallClockExpired(Exception):
    pass


def _on_alarm(signum, frame):
    raise _WallClockExpired


def launch(spec: dict) -> None:
    report_fd = spec["report_fd"]
    in_force: dict = {}
    refused: dict = {}
    is_root = os.geteuid() == 0
    sandbox_uid = spec["sandbox_uid"] if is_root else None
    limits = spec["limits"]

    # Counted before any user namespace, inside which every uid outside it reads as the overflow uid.
    me = os.getuid()
    callers_processes = len(_processes(lambda pid, fields, uid: uid == me))
    why_not = _call(_libc.prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if why_not:
        refused["subreaper"] = why_not
    if spec["cut_network"]:
        # A fresh namespace has only a loopback device, and it is down: even 127.0.0.1 is unreachable.
        why_not = _call(_libc.unshare, CLONE_NEWNET if is_root else CLONE_NEWUSER | CLONE_NEWNET)
        if why_not is None:
            in_force["network_namespace"] = True
        else:
            refused["network_namespace"] = f"unshare: {why_not}"

    if sandbox_uid is not None:
        # RLIMIT_NPROC counts the real uid's processes and is not enforced for root: under a
        # private unused uid it means exactly "processes of this sample".
        nproc = limits["processes"]
        in_force["unprivileged_uid"] = sandbox_uid
    else:
        nproc = callers_processes + limits["processes"]  # room for the caller's own processes
        refused["unprivileged_uid"] = "not root: runs as the calling user"
    _set_limits(limits, nproc)
    in_force.update(
        rlimit_cpu_s=limits["cpu_s"],
        rlimit_as_bytes=limits["memory_bytes"],
        rlimit_fsize_bytes=limits["file_size_bytes"],
        rlimit_nofile=limits["open_files"],
        rlimit_nproc=nproc,
    )

    started = time.monotonic()
    child = os.fork()
    if child == 0:
        try:
            os.close(report_fd)
            os.setpgid(0, 0)
            if sandbox_uid is not None:
                os.setgroups([])
                os.setgid(sandbox_uid)
                os.setuid(sandbox_uid)
            argv = spec["argv"]
            os.execve(argv[0], argv, spec["env"])
        finally:
            os._exit(127)

    timed_out = False
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, spec["timeout_s"])
    try:
        _, status = os.waitpid(child, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _WallClockExpired:
        timed_out = True
        status = None
    duration = time.monotonic() - started

    try:
        os.killpg(child, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if status is None:
        _, status = os.waitpid(child, 0)
    if sandbox_uid is not None:
        _kill_uid(sandbox_uid)
        in_force["reap_uid_processes"] = True
    _kill_and_reap_children()

    outcome = {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out, "duration_s": duration}
    os.write(report_fd, json.dumps({"in_force": in_force, "refused": refused, **outcome}).encode())
    os.close(report_fd)


if __name__ == "__main__":
    launch(json.loads(sys.argv[1]))
