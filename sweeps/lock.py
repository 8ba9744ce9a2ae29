"""One driver per sweep directory: `<sweep dir>/hxt.lock`.

The driver holds an exclusive `flock` on the lock file for as long as it runs, and writes who it is
(pid, host, start time) into it. The kernel drops the lock when the driver dies, however it dies,
so a lock left by a killed driver is stale by construction: the next driver takes it over (and
says so). The text stays behind a dead driver, which is how `hxt sweep status` tells a crashed
driver's `running` rows from live ones. Where `flock` is not shared between hosts (some network
file systems), the driver also refreshes the file's modification time as a heartbeat, and a
holder on another host with a fresh heartbeat counts as alive.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["LOCK_NAME", "Holder", "SweepLock", "driver_state"]

LOCK_NAME = "hxt.lock"
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 120.0  # a holder on another host whose heartbeat is older is taken to be gone
_ACQUIRE_TRIES = 20  # `hxt sweep status` holds a shared lock for an instant: retry briefly


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, running since {self.since}"


def _read_holder(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace")
    try:
        data = json.loads(text)
        return Holder(pid=int(data["pid"]), host=str(data["host"]), since=str(data["since"]))
    except (ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SweepLock:
    """The driver's lock on a sweep directory (`with SweepLock(dir) as lock: ...`)."""

    def __init__(self, sweep_dir: str | Path):
        self.dir = Path(sweep_dir)
        self.path = self.dir / LOCK_NAME
        self.fd: int | None = None
        self.previous: Holder | None = None  # a dead driver's lock that was taken over
        self._beat = 0.0

    def acquire(self) -> None:
        """Take the lock, or raise ValueError naming the driver that holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        shared_flock = True
        try:
            for attempt in range(_ACQUIRE_TRIES):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == _ACQUIRE_TRIES - 1:
                        raise self._held(_read_holder(fd)) from None
                    time.sleep(0.05)
                except OSError as error:
                    if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                        raise
                    shared_flock = False  # no flock here: judge by the text and the heartbeat alone
                    break
            previous = _read_holder(fd)
            if previous is not None and _alive_elsewhere(previous, self.path, shared_flock):
                raise self._held(previous)
            me = Holder(os.getpid(), socket.gethostname(), datetime.now(UTC).isoformat(timespec="seconds"))
            text = json.dumps({"pid": me.pid, "host": me.host, "since": me.since}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.previous = previous
        self._beat = time.monotonic()

    def _held(self, holder: Holder | None) -> ValueError:
        who = holder.describe() if holder else "a driver that has not written its name yet"
        return ValueError(
            f"--out {str(self.dir)!r} is in use by another `hxt sweep run` ({who}); wait for it to finish "
            f"or stop it, or choose another --out"
        )

    def heartbeat(self) -> None:
        """Refresh the lock file's modification time (cheap; at most every HEARTBEAT_SECONDS)."""
        now = time.monotonic()
        if self.fd is not None and now - self._beat >= HEARTBEAT_SECONDS:
            os.utime(self.fd)
            self._beat = now

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # no name left: status sees no driver, not a dead one
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _alive_elsewhere(holder: Holder, path: Path, shared_flock: bool) -> bool:
    """Whether the holder named in a lock file we could flock may still be running."""
    if holder.host == socket.gethostname():
        # Our flock proves it gone, unless flock is unavailable; then ask the kernel about its pid.
        return not shared_flock and _pid_alive(holder.pid)
    return time.time() - path.stat().st_mtime < STALE_SECONDS


def driver_state(sweep_dir: str | Path) -> tuple[str, Holder | None]:
    """Is a driver running this sweep? ("alive" | "gone" | "none", holder); reads only.

    "gone" means a driver's name is in the lock file but that driver is not running (it was
    killed): its `running` rows will be re-queued by the next `hxt sweep run`.
    """
    path = Path(sweep_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "none", None
    except OSError:
        return "none", None
    try:
        holder = _read_holder(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "alive", holder
        except OSError:  # no flock on this file system
            if holder is None:
                return "none", None
            alive = _pid_alive(holder.pid) if holder.host == socket.gethostname() else None
            if alive is None:
                alive = time.time() - os.fstat(fd).st_mtime < STALE_SECONDS
            return ("alive" if alive else "gone"), holder
        fcntl.flock(fd, fcntl.LOCK_UN)
        if holder is None:
            return "none", None
        if holder.host != socket.gethostname() and time.time() - os.fstat(fd).st_mtime < STALE_SECONDS:
            return "alive", holder
        return "gone", holder
    finally:
        os.close(fd)
