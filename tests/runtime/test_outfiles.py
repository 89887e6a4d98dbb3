"""runtime/outfiles.py: whole files go in place by rename, files written in place refuse links."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.outfiles import (
    LINK_REASON,
    NotRegularFileError,
    open_fd_in_place,
    open_in_place,
    open_regular_fd,
    replacing,
    replacing_path,
    write_bytes,
    write_text,
)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


def test_a_whole_file_replaces_a_link_at_its_name(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.json").symlink_to(victim)
    (out / "b.bin").symlink_to(tmp_path / "not-there")
    write_text(out / "a.json", "{}\n")
    write_bytes(out / "b.bin", b"\x00\x01")
    assert victim.read_text() == "precious\n" and not (tmp_path / "not-there").exists()
    assert not (out / "a.json").is_symlink() and (out / "a.json").read_text() == "{}\n"
    assert (out / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.bin"]  # no temporary file left


def test_a_whole_file_gets_the_mode_open_would_give(tmp_path: Path) -> None:
    """mkstemp makes 0600 files: outputs in a shared project folder would no longer be group-readable."""
    write_text(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")  # as open() makes it, under this process's umask
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "b.txt").stat().st_mode
    )


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    with pytest.raises(ValueError), replacing(path) as fh:
        fh.write("half of a new")
        raise ValueError("the writer failed")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_a_folder_in_the_way_is_named_not_the_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "model.pt").mkdir()
    with pytest.raises(OSError) as caught:
        write_bytes(tmp_path / "model.pt", b"weights")
    assert caught.value.filename == str(tmp_path / "model.pt")
    assert "a folder of this name is in the way" in caught.value.strerror
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_path_for_a_library_is_new_and_put_in_place(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    (tmp_path / "features.npy").symlink_to(victim)
    with replacing_path(tmp_path / "features.npy") as tmp:
        assert tmp.parent == tmp_path and tmp.is_file() and not tmp.is_symlink() and tmp.stat().st_size == 0
        tmp.write_bytes(b"data")  # as a library writing by name
    assert (tmp_path / "features.npy").read_bytes() == b"data" and not (
        tmp_path / "features.npy"
    ).is_symlink()
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npy", "victim.txt"]


@pytest.mark.parametrize("mode", ["a", "r+b", "w", "w+b"])
def test_a_file_written_in_place_refuses_a_link(tmp_path: Path, mode: str) -> None:
    victim = _victim(tmp_path)
    for link, target in (("to-file.csv", victim), ("dangling.csv", tmp_path / "new.txt")):
        (tmp_path / link).symlink_to(target)
        with pytest.raises(InputError) as caught:
            open_in_place(tmp_path / link, mode)
        assert str(caught.value) == f"{tmp_path / link}: {LINK_REASON}"
    assert victim.read_text() == "precious\n" and not (tmp_path / "new.txt").exists()


def test_a_file_written_in_place_is_appended_to_where_it_is(tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    with open_in_place(path, "a", newline="") as fh:
        fh.write("id\n")
    with open_in_place(path, "a", newline="") as fh:
        fh.write("x\n")
    assert path.read_text() == "id\nx\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_file_written_in_place_refuses_a_pipe(tmp_path: Path) -> None:
    """A pipe at the lock file's name is opened (O_RDWR does not block) but is no file to write."""
    os.mkfifo(tmp_path / "x.lock")
    with pytest.raises(InputError, match="is not a regular file"):
        os.close(open_fd_in_place(tmp_path / "x.lock", os.O_RDWR | os.O_CREAT))


def test_the_shared_opener_reads_a_regular_file_and_leaves_the_words_to_its_callers(tmp_path: Path) -> None:
    """One opener for files written in place and for the figures ``report`` inlines: a regular file
    is opened; a link fails as O_NOFOLLOW makes it and anything else raises NotRegularFileError,
    each caller saying it in its own words (no write-side InputError here)."""
    victim = _victim(tmp_path)
    fd = open_regular_fd(victim, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        assert fh.read() == b"precious\n"
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(OSError) as caught:
        open_regular_fd(tmp_path / "link", os.O_RDONLY)
    assert not isinstance(caught.value, InputError) and caught.value.errno in (errno.ELOOP, errno.EMLINK)
    with pytest.raises(NotRegularFileError):
        open_regular_fd(tmp_path, os.O_RDONLY)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_the_shared_opener_refuses_a_pipe_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "figure.png")
    with pytest.raises(NotRegularFileError):
        open_regular_fd(tmp_path / "figure.png", os.O_RDONLY | os.O_NONBLOCK)


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    from cryoshift.runtime.lock import FolderLock

    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".cryoshift.lock").symlink_to(victim)
    with pytest.raises(InputError, match="is a symbolic link"), FolderLock(out):
        pass
    assert victim.read_text() == "precious\n"  # was truncated and overwritten with a pid


def test_a_link_loop_above_the_file_is_an_os_error_not_a_link_refusal(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(OSError) as caught:
        open_in_place(tmp_path / "loop" / "ledger.csv", "a")
    assert not isinstance(caught.value, InputError) and caught.value.errno == errno.ELOOP
