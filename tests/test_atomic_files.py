"""The store module's atomic writers: a file or folder appears complete or not at all."""

import pytest

from bertvision.store import atomic_folder, atomic_write_json, atomic_write_text


def test_atomic_write_text_and_json(tmp_path):
    path = tmp_path / "sub" / "out.md"
    atomic_write_text(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(str(tmp_path / "a.json"), {"x": 1})
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'
    assert sorted(p.name for p in tmp_path.rglob("*tmp*")) == []


def test_atomic_write_failure_leaves_old_file(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")
    with pytest.raises(Exception):
        atomic_write_text(tmp_path / "missing-dir" / "x" / "..", "new")  # not a writable file name
    assert path.read_text() == "old"


def test_atomic_folder_replaces_only_when_complete(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_folder(target) as tmp:
        assert tmp.is_dir() and tmp.name.startswith(".ckpt.tmp-")
        (tmp / "a").write_text("1")
        assert not target.exists()
    assert (target / "a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("killed half-way")
    assert (target / "a").read_text() == "1"  # the old folder is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # and no temporary folder is left
    with atomic_folder(target) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # replaced as a whole
