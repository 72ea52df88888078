"""Run untrusted generated Python (HumanEval completions) so that it cannot hurt the host.

Each program runs in its own subprocess with:
  - a fresh temporary directory as working directory, a throwaway HOME and TMPDIR inside it;
  - a scrubbed environment (PATH, HOME, TMPDIR, LANG only) and `python -I` (no user site,
    no PYTHON* variables, script directory not trusted);
  - a wall-clock timeout after which its whole process group is SIGKILLed;
  - RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC, no core files;
  - when we are root: an otherwise unused uid of its own (so RLIMIT_NPROC is enforced and
    counts only this sample, files of other users are out of reach, and every process
    it left behind, even outside its process group, is killed afterwards), and a new
    network namespace with no usable interface;
  - when we are not root: a user + network namespace where the kernel allows it.

The program runs on our interpreter when a stranger uid can reach it, else on the system's
python3 (e.g. a pyenv Python under a 0700 /root); `protections["interpreter"]` says which.

What was actually in force is recorded with every result (`SandboxResult.protections`),
because it depends on the machine; nothing here pretends a protection it could not set up.
Not covered: world-readable files stay readable (as for any unprivileged user), and the
disk is bounded per file (RLIMIT_FSIZE) and by the timeout, not by a quota.

Executing model output is opt-in: callers must pass `allow_code_execution=True`
(the lm-eval route asks for `--confirm_run_unsafe_code`).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError

log = logging.getLogger(__name__)

_LAUNCHER = Path(__file__).with_name("_sandbox_launcher.py")
_OUTPUT_TAIL_BYTES = 4096
_LAUNCHER_GRACE_S = 30.0  # cleanup after a timeout never takes this long
# Unused uids are drawn from here; far above any uid a distribution hands out.
_UID_RANGE = (1_000_000_000, 2_000_000_000)


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one program.

    timeout_s 3.0 is the per-program timeout of lm-eval's HumanEval scorer (code_eval),
    so a slow-but-correct solution is judged the same way.
    """

    timeout_s: float = 3.0
    cpu_s: int = 3
    memory_bytes: int = 1 << 30
    file_size_bytes: int = 16 << 20
    open_files: int = 64
    processes: int = 16


@dataclass
class SandboxResult:
    """How one program ended.

    status: "passed" (exit 0), "failed" (non-zero exit), "timeout" (wall clock),
    "killed" (ended by a signal, e.g. SIGXCPU, SIGXFSZ, SIGKILL at the CPU hard limit).
    """

    passed: bool
    status: str
    returncode: int | None
    duration_s: float
    stdout: str
    stderr: str
    protections: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reachable_by_others(path: Path) -> bool:
    """Whether a uid that is neither owner nor group can execute `path` (every directory searchable)."""
    path = path.resolve()
    for parent in reversed(path.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    mode = os.stat(path).st_mode
    return bool(mode & stat.S_IXOTH and mode & stat.S_IROTH)


def _python_for_unprivileged_uid() -> str:
    """An interpreter a stranger uid can run: ours if reachable, else the system's python3."""
    candidates = [Path(sys.executable)]
    system_python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if system_python:
        candidates.append(Path(system_python))
    for candidate in candidates:
        # The standard library must be reachable too, not just the binary.
        prefix_ok = candidate != Path(sys.executable) or _reachable_by_others(Path(sys.base_prefix) / "lib")
        if _reachable_by_others(candidate) and prefix_ok:
            return str(candidate.resolve())
    raise SpecbenchError(
        f"sandbox: no Python interpreter is usable by an unprivileged uid ({sys.executable} sits in a "
        "directory only root can enter, and no /usr/bin/python3 was found); install a system python3"
    )


def _unused_uid() -> int:
    rng = random.SystemRandom()
    while True:
        uid = rng.randrange(*_UID_RANGE)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid


def _tail(path: Path) -> str:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - _OUTPUT_TAIL_BYTES))
        return handle.read().decode("utf-8", errors="replace")


def _kill_session(session_id: int) -> None:
    """SIGKILL every process of a session (the supervisor started one with setsid)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) == session_id:  # state, ppid, pgrp, session
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            pass


def run_python(
    program: str,
    *,
    limits: SandboxLimits = SandboxLimits(),
    allow_code_execution: bool = False,
    cut_network: bool = True,
) -> SandboxResult:
    """Run `program` (Python source) in a fresh sandbox; passed means it exited with status 0."""
    if not allow_code_execution:
        raise SpecbenchError(
            "refusing to execute generated code without an explicit opt-in: pass allow_code_execution=True "
            "(lm-eval: --confirm_run_unsafe_code)"
        )
    is_root = os.geteuid() == 0
    sandbox_uid = _unused_uid() if is_root else None
    interpreter = _python_for_unprivileged_uid() if is_root else sys.executable

    workdir = Path(tempfile.mkdtemp(prefix="specbench-sandbox-"))
    try:
        home, tmp = workdir / "home", workdir / "tmp"
        home.mkdir()
        tmp.mkdir()
        program_path = workdir / "program.py"
        program_path.write_text(program, encoding="utf-8")
        stdout_path, stderr_path = workdir / "stdout.txt", workdir / "stderr.txt"
        stdout_path.touch()
        stderr_path.touch()
        if sandbox_uid is not None:
            for path in (workdir, home, tmp, stdout_path, stderr_path):
                os.chown(path, sandbox_uid, sandbox_uid)

        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8"}
        report_read, report_write = os.pipe()
        spec = {
            "report_fd": report_write,
            "cut_network": cut_network,
            "timeout_s": limits.timeout_s,
            "limits": {k: int(v) for k, v in asdict(limits).items() if k != "timeout_s"},
            "sandbox_uid": sandbox_uid,
            "argv": [interpreter, "-I", str(program_path)],
            "env": env,
        }
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            launcher = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_LAUNCHER), json.dumps(spec)],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(report_write,),
                start_new_session=True,
            )
        os.close(report_write)
        with os.fdopen(report_read, "rb") as report_pipe:
            try:
                # The launcher enforces the timeout itself; this only guards against the launcher hanging.
                launcher.wait(timeout=limits.timeout_s + _LAUNCHER_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
            report = report_pipe.read()
        try:
            launched = json.loads(report)
        except json.JSONDecodeError:
            # Without root the program runs as our uid and can kill its supervisor: count that as
            # a failure of the program, kill what is left of its session, and go on.
            _kill_session(launcher.pid)
            log.warning("sandbox: the supervisor died (exit status %s); program scored as failed", launcher.returncode)
            return SandboxResult(passed=False, status="error", returncode=None, duration_s=0.0,
                                 stdout=_tail(stdout_path), stderr=_tail(stderr_path),
                                 protections={"not_in_force": {"supervisor": "killed before it reported"}})

        protections = {
            "own_process": True,
            "fresh_temp_dir": True,
            "throwaway_home": True,
            "scrubbed_env": True,
            "isolated_python": True,
            "interpreter": interpreter,
            "wall_timeout_s": limits.timeout_s,
            "kill_process_group": True,
            "reap_leftover_processes": True,
            "reap_uid_processes": False,
            "network_namespace": False,
            **launched["in_force"],
            "not_in_force": launched["refused"] | ({} if cut_network else {"network_namespace": "not requested"}),
        }
        returncode = launched["returncode"]
        if launched["timed_out"]:
            status = "timeout"
        elif returncode < 0:
            status = "killed"
        else:
            status = "passed" if returncode == 0 else "failed"
        return SandboxResult(
            passed=status == "passed",
            status=status,
            returncode=returncode,
            duration_s=launched["duration_s"],
            stdout=_tail(stdout_path),
            stderr=_tail(stderr_path),
            protections=protections,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def sandbox_protections(limits: SandboxLimits = SandboxLimits()) -> dict[str, Any]:
    """What a sandboxed run gets on this machine, found by running a trivial program."""
    return run_python("pass", limits=limits, allow_code_execution=True).protections
