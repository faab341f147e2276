"""Atomic writes: readers never see half a file, failures leave nothing behind, and outputs that
are not plain files (links, pipes, devices) get what a user expects of them."""

import os
import stat
import subprocess

import pytest

from bagcompile.atomic import atomic_text_writer, atomic_write_bytes, is_stream


def test_failure_keeps_the_old_file_and_removes_new_folders(tmp_path):
    target = tmp_path / "old.csv"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_text_writer(target) as handle:
            handle.write("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["old.csv"]
    with pytest.raises(RuntimeError):
        with atomic_text_writer(tmp_path / "a" / "b" / "new.csv") as handle:
            raise RuntimeError
    assert not (tmp_path / "a").exists()


def test_symlink_output_updates_its_target_and_stays_a_link(tmp_path):
    (tmp_path / "real.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    atomic_write_bytes(tmp_path / "link.csv", b"new")
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_bytes() == b"new"


def test_pipe_output_is_written_through(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    with atomic_text_writer(fifo) as handle:
        handle.write("through the pipe")
    assert reader.communicate(timeout=30)[0] == b"through the pipe"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # not replaced by a regular file


def test_long_names_and_modes(tmp_path):
    long = tmp_path / ("n" * 250 + ".csv")  # 254 characters: the temporary name must be shorter
    atomic_write_bytes(long, b"1")
    assert long.read_bytes() == b"1"
    read_only = tmp_path / "ro.csv"
    read_only.write_text("x")
    read_only.chmod(0o444)
    atomic_write_bytes(read_only, b"2")
    assert read_only.read_bytes() == b"2" and stat.S_IMODE(read_only.stat().st_mode) == 0o444
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_bytes(tmp_path / "fresh.bin", b"3")
    assert stat.S_IMODE((tmp_path / "fresh.bin").stat().st_mode) == 0o666 & ~umask


def test_errors_name_the_output_not_the_temporary_file(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError, match=f"cannot write {blocker / 'out.csv'}"):
        atomic_write_bytes(blocker / "out.csv", b"1")
    with pytest.raises(OSError, match=f"cannot write {blocker / 'sub' / 'out.csv'}: Not a directory"):
        atomic_write_bytes(blocker / "sub" / "out.csv", b"1")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    with pytest.raises(OSError, match="cannot write .*loop1: Too many levels of symbolic links"):
        with atomic_text_writer(tmp_path / "loop1"):
            pytest.fail("a symlink loop must fail before any work is done")
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        atomic_write_bytes(tmp_path, b"1")


def test_a_folder_that_cannot_be_made_takes_back_those_made_before_it(tmp_path):
    with pytest.raises(OSError, match="cannot create folder"):
        atomic_write_bytes(tmp_path / "a" / "b" / ("n" * 300) / "out.csv", b"1")  # name too long
    assert list(tmp_path.iterdir()) == []


def test_descriptor_paths_write_to_the_descriptor_as_opened(tmp_path):
    """/dev/stdout and /dev/fd/N: written through the caller's descriptor, so a shell's
    `>> log` appends instead of the log being truncated or renamed away."""
    log = tmp_path / "log.txt"
    log.write_text("previous\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        assert is_stream(f"/dev/fd/{fd}")
        with atomic_text_writer(f"/dev/fd/{fd}") as handle:
            handle.write("appended\n")
        atomic_write_bytes(f"/proc/self/fd/{fd}", b"bytes\n")
    finally:
        os.close(fd)
    assert log.read_text() == "previous\nappended\nbytes\n"
    assert is_stream("/dev/null") and not is_stream(log) and not is_stream(tmp_path / "absent.csv")
