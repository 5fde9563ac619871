"""Write files all-or-nothing, and clean up after saves that were killed.

Every file minifcn writes (weights, checkpoints, a run's config and metrics, predictions) goes
through :func:`atomic_path`: written to a temporary file in the same folder, then renamed over
the target, so a run killed mid-save leaves the previous file intact. A process killed outright
cannot delete its temporary file; the next save to the same target does (only files named
exactly as this module names that target's temporaries, whose writer has exited).
:func:`check_output` is the commands' check of a file they are about to write (never one of
their inputs, never an existing file without ``--overwrite``). Re-exported by :mod:`minifcn.io`.
"""
import contextlib
import os
import re
import secrets
import stat
import tempfile

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "check_output",
           "check_folder"]

_IN_FLIGHT = set()  # names of this process's temporary files being written now: never orphans


def _tmp_pattern(name):
    """The exact names ``atomic_path`` gives the temporaries of target ``name``."""
    return re.compile(rf"\.{re.escape(name)}\.([0-9]{{1,20}})\.[0-9a-f]{{8}}\.tmp")


def _writer_gone(pid):
    """Whether the process that made a temporary file has exited (so the file is an orphan)."""
    if pid == os.getpid():
        return True  # ours but not in flight: an earlier process that had our pid
    if os.name != "posix":
        return False  # no safe probe there (os.kill would end the process): leave it
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the pid exists
    except ProcessLookupError:
        return True
    except (OverflowError, ValueError):
        return True  # no process can have such a pid
    except OSError:
        return False  # it exists (another user's): leave its file alone
    return False


def _remove_orphans(folder, name):
    """Delete the temporaries of target ``name`` left by saves that were killed: regular files
    named exactly as :func:`atomic_path` names them, whose writer has exited (this process's own
    saves in flight are kept). Best effort: what cannot be deleted is left. A save from another
    machine (or container) on a shared folder, whose pid is not running here, would be taken
    for an orphan; it then fails at its rename, loudly, and its target keeps its previous file."""
    pattern = _tmp_pattern(name)
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry)
        full = os.path.join(folder, entry)
        # by name, not path: one folder can be reached by two paths (a symlink)
        if not match or entry in _IN_FLIGHT or not _writer_gone(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(full).st_mode):
                os.remove(full)


@contextlib.contextmanager
def atomic_path(path):
    """Write a file all-or-nothing: ``with atomic_path(p) as tmp: <write to tmp>``.

    Yields the name of a new empty file in the same folder as ``path``; if the block finishes,
    that file is flushed to disk and renamed over ``path`` (``os.replace`` is atomic on one file
    system); if it raises, the temporary file is deleted and ``path`` is untouched. A process
    killed outright leaves a stray ``.<name>.<pid>.<8 hex digits>.tmp`` behind, never a
    half-written ``path``; the next save to ``path`` deletes such strays (see
    :func:`_remove_orphans`). Write to exactly the yielded name (``np.save`` would append
    ``.npy``: give it an open file).
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    _remove_orphans(folder, name)
    while True:
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            # O_EXCL: never reuse someone else's file; mode 0o666 minus the umask, as open() would
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    _IN_FLIGHT.add(os.path.basename(tmp))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, tmp):
            # a full disk is seen by a write, which names no file (or our temporary): name the
            # file the caller asked for
            raise OSError(e.errno, e.strerror or str(e), path) from e
        raise
    finally:
        _IN_FLIGHT.discard(os.path.basename(tmp))


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path, text):
    """Write ``text`` (str, UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file: one spelling, a symlink or a hard link."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: nothing there to lose
        return False


def check_output(path, option, overwrite=False, inputs=(), create=False):
    """ValueError (one line, naming ``option``) unless a command may write the file ``path``:

    * never over one of its ``inputs`` (the same file by any path, symlinks and hard links
      included), even with ``overwrite``;
    * never over an existing file unless ``overwrite``; never at a folder;
    * a missing folder is fine if it could be made: the nearest existing one above it must be a
      folder a file can be written in. With ``create`` (right before the write: call it once
      early to fail fast, and again with ``create`` when the file is ready) that folder is made,
      as ``train`` and ``predict`` make theirs (``mkdir(parents=True, exist_ok=True)``).

    Writing the file is :func:`atomic_path`'s (a temporary file renamed over ``path``).
    """
    if not path:
        raise ValueError(f"{option} is empty: give the file to write")
    path = os.fspath(path)
    for given in inputs:
        if given and _same_file(path, given):
            raise ValueError(f"{option} {path} is the same file as the input {os.fspath(given)}, "
                             "which is never replaced, even with --overwrite: choose another name")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a folder; give the name of a file to write")
    if os.path.lexists(path) and not overwrite:
        raise ValueError(f"{option} {path} already exists: choose another name, or pass "
                         "--overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    check_folder(folder, f"{option} {path}")
    if create:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{option} {path}: cannot make the folder {folder} "
                             f"({e.strerror or e})") from None


def check_folder(folder, what):
    """ValueError (one line, starting with ``what``) unless ``folder`` is, or could be made as,
    a folder a file can be written in: the nearest existing path at or above it is such a
    folder. Tried by making a file there, not read from the permission bits (root passes those)."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):  # made later, by the write
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ValueError(f"{what}: {probe} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        raise ValueError(f"{what}: folder {probe} is not writable ({e.strerror or e})") from None
