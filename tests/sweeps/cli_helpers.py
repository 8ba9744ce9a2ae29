"""Running `hxt` as a user does, and checking what it left on disk."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.cli import main

ROOT = Path(__file__).resolve().parents[2]

def sweep_toml(*, model: dict, train: dict, task: dict, arch: tuple[dict, ...] = (), **top) -> str:
    """A sweep file: the top-level keys `top`, the [model] and [train] tables, each [[arch]] table
    and the one [[task]] table (a dict value becomes an inline table)."""

    def value(item) -> str:
        if isinstance(item, dict):
            return "{ " + ", ".join(f"{key} = {value(v)}" for key, v in item.items()) + " }"
        return json.dumps(item)

    def keys(table: dict) -> list[str]:
        return [f"{key} = {value(v)}" for key, v in table.items()]

    lines = [*keys(top), "[model]", *keys(model), "[train]", *keys(train)]
    for table in arch:
        lines += ["[[arch]]", *keys(table)]
    return "\n".join([*lines, "[[task]]", *keys(task)]) + "\n"


def sweep_file(
    directory: Path, seeds=(0, 1), steps: int = 20, max_attempts: int = 2, name="tiny.toml"
) -> Path:
    """Two tiny CPU runs of parity; `steps` large makes runs that outlast a test's signals."""
    path = directory / name
    text = sweep_toml(
        name="tiny", patterns=["A"], sizes=[2500], lrs=[3e-3], seeds=list(seeds), device="cpu",
        max_attempts=max_attempts, model={"n_layers": 1, "n_heads": 2},
        train={"batch_size": 8, "steps": steps, "warmup": 2, "log_every": 5, "eval_examples_per_bin": 16,
               "eval_bins": 3},
        task={"name": "parity", "train": {"length": [2, 6]}, "eval": {"length": [2, 12]}},
    )  # fmt: skip
    path.write_text(text)
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`hxt ARGV` in this process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def hxt(*argv, **popen) -> subprocess.Popen:
    """`hxt ARGV` as a child process (stdout and stderr piped unless given)."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps.cli", *map(str, argv)], cwd=ROOT, text=True, **popen
    )


def digest(path: Path) -> dict[str, str]:
    """Every file and folder under `path` (or `path` itself), with a hash of each file's bytes."""
    path = Path(path)
    if not path.exists():
        return {}
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for item in sorted(path.rglob("*")):
        key = str(item.relative_to(path))
        out[key] = hashlib.sha256(item.read_bytes()).hexdigest() if item.is_file() else "dir"
    return out


def assert_one_line_error(code: int, out: str, err: str, *named: str) -> None:
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in out + err
    for text in named:
        assert text in err, (text, err)


def read_only_command(directory: Path, argv: list[str]) -> list[str] | None:
    """A command line running `hxt ARGV` with `directory` mounted read-only, or None if this machine
    cannot make a read-only view (root bypasses file modes, so root uses a private mount namespace)."""
    command = shlex.join([sys.executable, "-m", "sweeps.cli", *map(str, argv)])
    if os.geteuid() != 0:
        return ["sh", "-c", command]  # the caller makes the files read-only with chmod
    if shutil.which("unshare") is None:
        return None
    d = shlex.quote(str(directory))
    script = f"mount --bind {d} {d} && mount -o remount,ro,bind {d} {d} && exec {command}"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {d} {d}"], capture_output=True)
    return ["unshare", "-m", "sh", "-c", script] if probe.returncode == 0 else None


def run_read_only(directory: Path, *argv) -> subprocess.CompletedProcess:
    command = read_only_command(directory, list(argv))
    if command is None:
        pytest.skip("cannot make a read-only view of a directory here (needs unshare and mount as root)")
    modes = {}
    if os.geteuid() != 0:
        for item in [directory, *directory.rglob("*")]:
            modes[item] = item.stat().st_mode
            item.chmod(modes[item] & ~0o222)
    try:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        for item, mode in modes.items():
            item.chmod(mode)


def children(pid: int) -> list[int]:
    """The pids of a process's children (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, what: str, timeout: float = 240.0, process: subprocess.Popen | None = None):
    """Poll `condition()` until it returns a true value; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"hxt exited ({process.returncode}) while waiting for {what}: {out}\n{err}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")
