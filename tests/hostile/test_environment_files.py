"""The hostile-environment tester's findings about files and the process's surroundings: ``report -o``
naming a device, a pipe or a link to one; lock files that ignored the umask (a group could not
``--resume`` a shared run); a working directory deleted under the process; ``bench --json`` under a
zero file-size limit; and ``report``'s default page written over the page of another kind.

No test points at a real device file: pipes are made with ``os.mkfifo`` in ``tmp_path`` and the
only device used is ``/dev/null`` as a link's target, never written through."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_inputs import VOXEL, Capsys, assert_error, run_cli, volumes

from cryoshift.runtime.cli import CWD_GONE
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.lock import FolderLock
from cryoshift.runtime.mrc import write_volume
from cryoshift.runtime.outfiles import write_text

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
CLI = Path(sys.executable).parent / "cryoshift"
METRICS = "epoch,loss,src_val_acc,tgt_im\n0,1.0,0.5,0.1\n1,0.8,0.6,0.2\n"


@pytest.fixture()
def results(model: Path, tmp_path: Path, capsys: Capsys) -> Path:
    """A real classify output of four small volumes."""
    pytest.importorskip("matplotlib")
    return _classified(model, tmp_path, capsys, 4)


def _classified(model: Path, tmp_path: Path, capsys: Capsys, n: int) -> Path:
    """``tmp_path/out``: classify's output of ``n`` small volumes written to ``tmp_path/vols``."""
    folder = tmp_path / "vols"
    folder.mkdir()
    for i, v in enumerate(volumes(n)):
        write_volume(folder / f"v{i}.mrc", v, voxel_size=VOXEL)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu"], capsys)
    assert code == 0, err
    return out


@pytest.fixture()
def umask_002() -> Iterator[None]:
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------
# F2: report -o replaced a device, a pipe or a link to one with a regular file


@needs_fifo
def test_report_out_refuses_a_named_pipe_and_leaves_it(results: Path, tmp_path: Path, capsys: Capsys) -> None:
    """``report -o /dev/full`` replaced the device with a 121 kB HTML file (rc 0); a pipe the same way."""
    pipe = tmp_path / "page.html"
    os.mkfifo(pipe)
    line = assert_error(run_cli(["report", results, "-o", pipe], capsys), pipe)
    assert "is a named pipe (FIFO), not a regular file" in line, line
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)


@needs_fifo
def test_report_out_refuses_a_link_to_a_pipe_or_device_and_keeps_the_link(
    results: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """``report -o /dev/stdout`` (a link to /proc/self/fd/1) replaced the link with a regular file
    and printed nothing: a link to a pipe or a device is refused, the link kept."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for target, kind in ((pipe, "a named pipe (FIFO)"), (Path(os.devnull), "a device")):
        link = tmp_path / f"link-{target.name}.html"
        link.symlink_to(target)
        line = assert_error(run_cli(["report", results, "-o", link], capsys), link)
        assert f"is a symbolic link to {kind}, not a regular file" in line, line
        assert link.is_symlink() and Path(os.readlink(link)) == target
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)


@needs_fifo
def test_no_whole_file_is_renamed_over_a_named_pipe(tmp_path: Path) -> None:
    """The rule under every whole-file writer (runtime/outfiles.py): a pipe at the name is refused in
    one line, never replaced by the rename."""
    pipe = tmp_path / "manifest.json"
    os.mkfifo(pipe)
    with pytest.raises(InputError, match="is a named pipe \\(FIFO\\), not a regular file"):
        write_text(pipe, "{}\n")
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
    assert os.listdir(tmp_path) == ["manifest.json"]  # no temporary file left


# ---------------------------------------------------------------------------------------------
# F9: report's default page over a page of the other kind


def test_report_default_page_does_not_replace_the_page_of_another_kind(results: Path, capsys: Capsys) -> None:
    """A folder holding a run and classify results (``classify -o RUN``): ``report RUN`` and
    ``report RUN/predictions.csv`` both wrote RUN/report.html, each replacing the other's page."""
    (results / "metrics.csv").write_text(METRICS)
    code, _, err = run_cli(["report", results], capsys)
    assert code == 0, err
    page = results / "report.html"
    run_page = page.read_text()
    assert "<title>cryoshift training run" in run_page
    line = assert_error(run_cli(["report", results / "predictions.csv"], capsys), page)
    assert "holds the report of a training run" in line and "--out" in line, line
    assert page.read_text() == run_page
    code, _, err = run_cli(["report", results], capsys)  # the same kind again: replaced as before
    assert code == 0, err
    other = results / "results.html"
    code, _, err = run_cli(["report", results / "predictions.csv", "-o", other], capsys)
    assert code == 0, err
    assert "<title>cryoshift results" in other.read_text()


# ---------------------------------------------------------------------------------------------
# F4: lock files honour the umask; a group member can lock a shared run


def test_lock_file_honours_the_umask(umask_002: None, model: Path, tmp_path: Path, capsys: Capsys) -> None:
    """Under umask 002 every output was group-writable except the lock (always 0644)."""
    out = _classified(model, tmp_path, capsys, 2)
    assert stat.S_IMODE((out / ".cryoshift-classify.lock").stat().st_mode) == 0o664
    other = tmp_path / "other"
    other.mkdir()
    with FolderLock(other, ".x.lock"):
        assert stat.S_IMODE((other / ".x.lock").stat().st_mode) == 0o664


_GROUP = 54321  # a group the two users share (no name needed)


def _as_user(uid: int, folder: Path) -> str:
    """Take and drop the lock ``folder/.x.lock`` in a child process running as user ``uid`` of
    :data:`_GROUP` under umask 002 (root's powers over file modes dropped); returns what it said
    ("" when it got the lock). Forked, not a new interpreter: the venv may sit where ``uid``
    cannot read."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        said = b""
        try:
            os.close(read)
            os.setgroups([_GROUP])
            os.setgid(_GROUP)
            os.setuid(uid)
            os.umask(0o002)
            FolderLock(folder, ".x.lock").acquire().release()
        except BaseException as exc:
            said = f"{type(exc).__name__}: {exc}".encode() or b"?"
        finally:
            os.write(write, said)
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        said = fh.read().decode()
    os.waitpid(pid, 0)
    return said


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to act as two users")
def test_a_group_member_can_lock_a_lock_file_another_member_made(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The tester's shared project: a colleague's ``--resume`` was refused "Permission denied" on
    the lock alone. A lock made under umask 002 is group-writable; one made 0644 (an older
    cryoshift) is locked read-only."""
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="cryoshift-shared-"))  # /tmp: reachable by other users
    try:
        os.chmod(shared, 0o777)
        run = shared / "run"
        run.mkdir()
        os.chown(run, 65534, _GROUP)
        os.chmod(run, 0o2775)
        assert _as_user(65534, run) == ""
        lock = run / ".x.lock"
        assert stat.S_IMODE(lock.stat().st_mode) == 0o664 and lock.stat().st_uid == 65534
        assert _as_user(65533, run) == ""  # was "Permission denied"
        os.chmod(lock, 0o644)  # as an older cryoshift made it
        assert _as_user(65533, run) == ""
    finally:
        import shutil

        shutil.rmtree(shared, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# F6: the working directory deleted under the process


def _gone(tmp_path: Path) -> Path:
    gone = tmp_path / "gone"
    gone.mkdir()
    return gone


def test_a_deleted_working_directory_is_said_before_torch_is_imported(tmp_path: Path) -> None:
    """simulate/train/export/evaluate died with torch's "Intel oneMKL FATAL ERROR: Cannot load
    libtorch_cpu.so" (a broken install, it seemed); now one line says the cause, and no folder is
    made."""
    gone = _gone(tmp_path)
    out = tmp_path / "sim"
    script = f'cd "{gone}" && rmdir "{gone}" && exec "$0" "$@"'
    argv = [str(CLI), "simulate", str(out), "-s", "builtin:ribosome", "--n", "4", "--box", "16"]
    done = subprocess.run(["sh", "-c", script, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"cryoshift: error: {CWD_GONE}", done.stderr
    assert not out.exists()


def test_classify_from_a_deleted_working_directory_makes_no_folder(
    model: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """classify said a bare "No such file or directory" and left a partial output folder."""
    folder = tmp_path / "vols"
    folder.mkdir()
    write_volume(folder / "v.mrc", volumes(1)[0], voxel_size=VOXEL)
    gone = _gone(tmp_path)
    monkeypatch.chdir(gone)
    gone.rmdir()
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", model, folder, "-o", out, "-q", "-b", "cpu"], capsys)
    monkeypatch.chdir(tmp_path)
    assert code == 2 and err.strip() == f"cryoshift: error: {CWD_GONE}", err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# F8: bench under a zero file-size limit


def test_bench_under_a_zero_file_size_limit_says_file_too_large(model: Path, tmp_path: Path) -> None:
    """ "No usable temporary directory found in [...]" blamed the folders; the cause is that no file
    can be written there (``ulimit -f 0``)."""

    def no_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    argv = [str(CLI), "bench", str(model), "--n", "2", "--repeats", "1", "--batch-size", "2"]
    argv += ["--workers", "1", "-b", "cpu", "--json", str(tmp_path / "b.json")]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=no_file_size, env=env)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"cryoshift: error: {tmp_path}: cannot write") and "File too large" in line, line
    assert "No usable temporary directory" not in line
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith((".cryoshift-probe", "b.json"))]
    assert left == []  # no probe file, no empty --json left
