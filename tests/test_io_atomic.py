"""Tests for minifcn.io.atomic: all-or-nothing writes, and the orphans of killed saves removed by the
next save to the same target (and nothing else)."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from minifcn import io


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_cleans_up_on_any_error(tmp_path, error):
    path = tmp_path / "metrics.json"
    io.atomic_write_text(path, "old")
    with pytest.raises(error):
        with io.atomic_path(path) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and tmp != str(path)
            with open(tmp, "w") as f:
                f.write("new but unfinish")
            raise error()
    assert os.listdir(tmp_path) == ["metrics.json"]
    assert path.read_text() == "old"
    io.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["metrics.json"]


# --- checkpoints ---------------------------------------------------------------------------


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_save_killed_mid_write_leaves_an_orphan_the_next_save_removes(tmp_path):
    path = tmp_path / "last.npz"
    io.save({"a": np.zeros(3)}, path)
    code = ("import os, signal, numpy as np\nfrom minifcn import io\n"
            f"with io.atomic_path({str(path)!r}) as tmp:\n"
            "    open(tmp, 'wb').write(b'half an npz')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    run = subprocess.run([sys.executable, "-c", code])
    assert run.returncode == -signal.SIGKILL
    orphans = [n for n in os.listdir(tmp_path) if n != "last.npz"]
    assert len(orphans) == 1 and orphans[0].startswith(".last.npz.")  # what the kill left
    io.save({"a": np.ones(3)}, path)
    assert os.listdir(tmp_path) == ["last.npz"]
    np.testing.assert_array_equal(io.load(path)["a"], np.ones(3))


def test_next_save_removes_orphan_temporaries_of_its_target_and_nothing_else(tmp_path):
    path = tmp_path / "ckpt.npz"
    io.save({"a": np.zeros(3)}, path)
    dead, live = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; "
                                                "time.sleep(60)"])
    try:
        orphans = [f".ckpt.npz.{dead}.0123abcd.tmp",
                   f".ckpt.npz.{os.getpid()}.89abcdef.tmp"]  # an earlier process with our pid
        kept = [f".ckpt.npz.{live.pid}.deadbeef.tmp",  # a save still running elsewhere
                f".other.npz.{dead}.0123abcd.tmp", f".ckpt.npzx.{dead}.0123abcd.tmp",
                f".ckpt.npz.{dead}.0123abc.tmp", f".ckpt.npz.{dead}.0123ABCD.tmp",
                f".ckpt.npz.{dead}.0123abcd.tmp.bak", f"ckpt.npz.{dead}.0123abcd.tmp",
                f".ckpt.npz.x{dead}.0123abcd.tmp", "notes.txt"]
        for name in orphans + kept:
            (tmp_path / name).write_text("left behind")
        os.mkdir(tmp_path / f".ckpt.npz.{dead}.fedcba98.tmp")  # not a file: not ours to delete
        kept.append(f".ckpt.npz.{dead}.fedcba98.tmp")
        io.save({"a": np.ones(3)}, path)
        assert sorted(os.listdir(tmp_path)) == sorted(kept + ["ckpt.npz"])
        np.testing.assert_array_equal(io.load(path)["a"], np.ones(3))
    finally:
        live.kill()
        live.wait()


def test_a_save_in_flight_in_this_process_is_not_an_orphan(tmp_path):
    path = tmp_path / "metrics.json"
    with io.atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("outer")
        io.atomic_write_text(path, "inner")  # another save of the same target meanwhile
        assert os.path.exists(tmp)
    assert path.read_text() == "outer" and os.listdir(tmp_path) == ["metrics.json"]
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")  # one folder by two paths
    with io.atomic_path(tmp_path / "real" / "m.json") as tmp:
        io.atomic_write_text(tmp_path / "link" / "m.json", "inner")
        assert os.path.exists(tmp)
