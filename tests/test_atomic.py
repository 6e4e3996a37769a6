"""Atomic writes: the old content survives a failed write, and files get the usual permissions."""

import os
import stat

import pytest

from titanbench.atomic import write_json, write_text


def test_write_failing_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    write_json(target, {"status": "ok"})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_json(target, {"status": "failed"})
    assert target.read_text() == '{\n  "status": "ok"\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_written_files_follow_the_umask_not_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        write_text(tmp_path / "RESULTS.md", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "RESULTS.md").stat().st_mode) == 0o644
