"""bertvision.io, the file layer: a file or folder appears complete or not at
all, and a folder lock refuses a second writer (and is freed when its holder dies)."""

import os
import signal
import subprocess
import sys

import pytest

from bertvision import io
from bertvision.errors import BertVisionError, StoreError


def test_atomic_write_text_and_json(tmp_path):
    path = tmp_path / "sub" / "out.md"
    io.atomic_write_text(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    io.atomic_write_json(str(tmp_path / "a.json"), {"x": 1, "é": [1.5]})
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1,\n  "é": [\n    1.5\n  ]\n}\n'
    assert io.read_json(tmp_path / "a.json") == {"x": 1, "é": [1.5]}
    assert sorted(p.name for p in tmp_path.rglob("*tmp*")) == []


def test_atomic_write_failure_leaves_old_file(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")
    (tmp_path / "dir").mkdir()
    with pytest.raises(BertVisionError):
        io.atomic_write_text(tmp_path / "dir", "new")  # a folder is in the way
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "keep.txt"]


def test_atomic_path_removes_its_temporary_file_on_error(tmp_path):
    target = tmp_path / "model.keras"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            assert tmp.endswith(".keras") and os.path.basename(tmp).startswith(".model.tmp-")
            open(tmp, "w").write("half")
            raise RuntimeError("killed half-way")
    assert list(tmp_path.iterdir()) == []


def test_read_json_names_a_damaged_file(tmp_path):
    (tmp_path / "x.json").write_text('{"a": ')
    with pytest.raises(StoreError, match=r"x.json: not valid JSON"):
        io.read_json(tmp_path / "x.json", StoreError)


def test_atomic_folder_replaces_only_when_complete(tmp_path):
    target = tmp_path / "ckpt"
    with io.atomic_folder(target) as tmp:
        assert tmp.is_dir() and tmp.name.startswith(".ckpt.tmp-")
        (tmp / "a").write_text("1")
        assert not target.exists()
    assert (target / "a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with io.atomic_folder(target) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("killed half-way")
    assert (target / "a").read_text() == "1"  # the old folder is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # and no temporary folder is left
    with io.atomic_folder(target) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # replaced as a whole


def test_lock_refuses_a_second_holder_and_is_freed_by_kill(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from bertvision import io\n"
         "with io.exclusive_lock(sys.argv[1], 'a test'):\n"
         "    print('locked', flush=True); time.sleep(60)\n", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=rf"{tmp_path} is in use by pid {holder.pid} \(extraction\)"):
            with io.exclusive_lock(tmp_path, "extraction", StoreError):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with io.exclusive_lock(tmp_path, "extraction", StoreError):  # the dead holder's lock is gone
            pass
    finally:
        holder.kill()
        holder.wait()
