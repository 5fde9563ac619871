"""One process at a time in a run folder: RUN/run.lock.

Two trains started with the same ``--out`` would each write config, checkpoints and metrics,
and the folder would end with some files of one and some of the other. So a run locks its
folder for as long as it runs, and a second process is refused, told which process holds it.

The lock file holds the pid and host of the process training there, and is locked with
``flock(2)`` while it runs. The kernel drops that lock when the process ends, however it ends
(SIGKILL and power cuts included), so a lock file whose flock is free was left by a process that
is gone: a stale lock, which the next run takes over with a one-line notice. A run that ends,
by any exception too, removes the file. Where ``flock`` does not exist (Windows), the file
alone is the lock: a stale one is then removed by hand (the message says so).
"""
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK = "run.lock"


class RunLock:
    """This process's hold on a run folder; ``release()`` (or the end of a ``with``) ends it."""

    def __init__(self, path, fd):
        self.path, self.fd = Path(path), fd

    def release(self):
        if self.fd is None:
            return
        try:  # remove the file only while it is still ours (a hand may have removed it)
            if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)  # after the unlink: no one can lock the old file in between
        self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def lock_run(folder, log=print):
    """Lock the run folder ``folder`` (which must exist) for this process; returns a RunLock.

    ValueError (one line, naming the process that holds it) if another process runs there. A
    stale lock, left by a process that has ended, is taken over and ``log`` says so."""
    path = Path(folder) / LOCK
    if fcntl is None:  # no flock: the file is the lock, stale or not
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _holder(path.read_bytes()) or "another process"
            raise ValueError(_in_use(folder, path, f"{holder} (if it has ended, remove "
                                                   f"{path})")) from None
        return _hold(path, fd)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(_read(fd)) or "another process"
            os.close(fd)
            raise ValueError(_in_use(folder, path, holder)) from None
        except OSError:  # a file system without locks: run unprotected rather than not at all
            pass
        # its owner may have removed the file between our open and our lock: then we locked a
        # file no one else will see; start again with the one at ``path``
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    previous = _holder(_read(fd))
    if previous:
        log(f"run folder {folder}: took over the stale lock of {previous}, which is no longer "
            f"running")
    return _hold(path, fd)


def _in_use(folder, path, holder):
    return (f"run folder {folder} is in use by {holder} (its lock is {path}); two runs in one "
            f"folder would mix their files: wait for it to end, stop it, or give another --out")


def _hold(path, fd):
    """Write this process into the lock file ``fd``; the RunLock."""
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode())
    return RunLock(path, fd)


def _read(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096)


def _holder(data):
    """'process PID on HOST (since TIME)' from a lock file's bytes; '' when it names none."""
    try:
        record = json.loads(data.decode("utf-8"))
        return f"process {int(record['pid'])} on {record['host']} (since {record['since']})"
    except (ValueError, TypeError, KeyError, AttributeError):
        return "another process" if data.strip() else ""


def holder_of(folder):
    """Who runs in ``folder`` now, as lock_run's message names it, or None: reads the lock file
    only (a check before the run starts, which takes nothing, so it cannot block the real one).
    A process on another host is taken to be running."""
    path = Path(folder) / LOCK
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        pid, host = int(record["pid"]), record["host"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if host == socket.gethostname() and not _alive(pid):
        return None
    return _holder(path.read_bytes()) or None


def _alive(pid):
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # no safe probe (os.kill would end the process)
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the pid exists
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):
        return False
    except OSError:
        return True  # it exists (another user's)
    return True
