"""A folder job writes its pictures on threads of their own while the model works on the next
(writes.py), and reads the next picture while the model works on this one (reads.py): the same
files as one picture at a time, failures named per file, bounded."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import INSTANT_MODEL
from draw import draw_cel
from PIL import Image

from upscaler.cli import main
from upscaler.errors import MediaError
from upscaler.reads import read_ahead
from upscaler.writes import BackgroundWrites


def pictures(folder: Path) -> None:
    """Pictures of several sizes and kinds: RGB, RGBA, 16-bit gray, an animated GIF."""
    folder.mkdir()
    for n, (h, w) in enumerate([(24, 40), (40, 24), (24, 40), (24, 40), (20, 52), (24, 40)]):
        Image.fromarray(draw_cel(h, w, seed=n)).save(folder / f"p{n}.png")
    rgba = np.dstack([draw_cel(30, 30, seed=9), np.linspace(0, 255, 900, dtype=np.uint8)
                      .reshape(30, 30)])
    Image.fromarray(rgba).save(folder / "alpha.png")
    Image.fromarray(draw_cel(16, 20, seed=3)[..., 0].astype(np.uint16) * 257).save(
        folder / "deep.png")
    frames = [Image.fromarray(draw_cel(16, 16, seed=s)) for s in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=80)


def read(path: Path) -> list[np.ndarray]:
    with Image.open(path) as im:
        out = []
        for n in range(getattr(im, "n_frames", 1)):
            im.seek(n)
            out.append(np.asarray(im.convert("RGBA") if im.mode == "P" else im).copy())
        return out


def test_a_folder_writes_what_each_picture_alone_writes(tmp_path: Path) -> None:
    src = tmp_path / "in"
    pictures(src)
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "-q", *INSTANT_MODEL]) == 0
    names = sorted(p.name for p in src.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        alone = tmp_path / "alone" / name
        assert main([str(src / name), "-o", str(alone), "-q", *INSTANT_MODEL]) == 0
        got, expected = read(out / name), read(alone)
        assert len(got) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True)), name


def test_a_picture_its_format_cannot_hold_fails_alone(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """WebP holds 16383 px a side: the 4x of a 4200-px-wide picture is refused before the model
    runs (Pillow's encoder raised a ValueError, a traceback, after it), the rest written."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((8, 4200, 3), 90, np.uint8)).save(src / "wide.png")
    for n in range(3):
        Image.fromarray(draw_cel(12, 12, seed=n)).save(src / f"s{n}.png")
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "--format", "webp", "-q", *INSTANT_MODEL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"upscale: error: {out / 'wide.webp'}: WEBP holds pictures up to 16383 px a "
                   "side, and this one would be 16800x32; write PNG or TIFF, or give a smaller "
                   "--scale", "upscale: 3 done, 0 skipped, 1 failed"]
    assert sorted(p.name for p in out.iterdir()) == ["s0.webp", "s1.webp", "s2.webp"]


def test_writes_end_in_order_bounded_with_their_errors() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def write(n: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02 * (n % 3))
        with lock:
            running -= 1
        if n == 4:
            raise MediaError("cannot write: disk full", f"{n}.png")

    ended = []
    with BackgroundWrites(threads=2, waiting_bytes=100) as writes:
        for n in range(8):
            ended += writes.submit(n, lambda n=n: write(n), nbytes=30)
        ended += writes.finish()
    assert [key for key, _ in ended] == list(range(8))
    assert [str(e) for _, e in ended if e is not None] == ["4.png: cannot write: disk full"]
    assert most == 2
    assert BackgroundWrites(2, waiting_bytes=100).fits(100)
    assert not BackgroundWrites(2, waiting_bytes=100).fits(101)


def test_the_next_picture_is_read_while_the_caller_holds_this_one() -> None:
    started: list[int] = []
    second_read = threading.Event()

    def read(n: int) -> int:
        started.append(n)
        if n == 1:
            second_read.set()
        if n == 2:
            raise MediaError("cannot read: truncated", f"{n}.png")
        return n * 10

    got = []
    with read_ahead(range(5), read) as pictures:
        for n, picture in pictures:
            if n == 0:
                # Handed picture 0, its result not asked for yet: picture 1 is being read.
                assert second_read.wait(5)
            try:
                got.append(picture.result())
            except MediaError as e:
                got.append(str(e))
    assert got == [0, 10, "2.png: cannot read: truncated", 30, 40]
    assert started == [0, 1, 2, 3, 4]

    started.clear()
    with read_ahead(range(5), read) as pictures:
        for _ in pictures:
            break  # a full disk: what was not started is never read
    assert started in ([0], [0, 1])


def test_a_rerun_removes_what_a_stopped_run_left_unwritten(tmp_path: Path) -> None:
    """A picture is written under a hidden temporary name and renamed when complete; a run
    killed mid-write leaves that file (several, with a writer per core), and nothing else would
    ever remove it. The next run over those outputs does, whether it writes them or skips
    them, and leaves other files alone."""
    from upscaler.media.images.write import temporary_name

    src = tmp_path / "stills"
    src.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(draw_cel(12, 16)).save(src / name)
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(draw_cel(48, 64)).save(out / "a.png")  # finished before the kill
    left = [temporary_name(out / "a.png"), temporary_name(out / "b.png"),
            temporary_name(out / "b.png")]
    kept = [temporary_name(out / "c.png"),  # no output of this job
            out / ".b.png.draft.tmp", out / "b.png.0123456789ab.tmp"]
    for path in (*left, *kept):
        path.write_bytes(b"\x89PNG half")
    assert main([str(src), "-o", str(out), *INSTANT_MODEL, "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["a.png", "b.png",
                                                            *(p.name for p in kept)])
    with Image.open(out / "b.png") as done:
        assert done.size == (64, 48)
    # A single picture's job, also when its output is there already and it is skipped.
    stray = temporary_name(out / "a.png")
    stray.write_bytes(b"half")
    assert main([str(src / "a.png"), "-o", str(out / "a.png"), *INSTANT_MODEL, "--quiet"]) == 0
    assert not stray.exists() and (out / "a.png").exists()


def noise_pictures(folder: Path, count: int) -> list[Path]:
    """`count` pictures of noise in `folder`, 54 KB each as the instant model's 4x PNGs: about
    half of 12 fill a 300 KB disk."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = [folder / f"{n:02d}.png" for n in range(count)]
    for path in paths:
        Image.fromarray(rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)).save(path)
    return paths


def assert_stopped_at_a_full_disk(err: str, out: Path, total: int) -> list[str]:
    """A folder job's stderr says, in one line, that it stopped at a full disk, and how many of
    `total` pictures went into `out`, with no partial file there; the names written."""
    lines = err.strip().splitlines()
    written = sorted(p.name for p in out.iterdir())
    assert 0 < len(written) < total and not any(n.startswith(".") for n in written)
    assert re.fullmatch(rf"upscale: error: {out}/\d\d\.png: disk full: {len(written)} of "
                        rf"{total} pictures written to {out}; free some space, and the same "
                        r"command does the rest", lines[0]), lines
    assert lines[1:] == [f"upscale: {len(written)} done, 0 skipped, 1 failed"]
    return written


def test_a_full_disk_ends_a_folder_job_in_one_line(tmp_path: Path,
                                                   small_disk: Callable[[str], Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Every picture after the disk filled ran the model only to fail to be written, a line
    each. The job now stops at the first, with what was written, and the rerun does the rest."""
    src = tmp_path / "noise"
    noise_pictures(src, 12)
    out = small_disk("300k") / "out"
    assert main([str(src), "-o", str(out), *INSTANT_MODEL, "--quiet"]) == 5
    written = assert_stopped_at_a_full_disk(capsys.readouterr().err, out, 12)
    kept = written[len(written) // 2:]
    for name in written[: len(written) // 2]:
        (out / name).unlink()  # some space freed
    assert main([str(src), "-o", str(out), *INSTANT_MODEL, "--quiet"]) == 5
    lines = capsys.readouterr().err.strip().splitlines()
    assert f"pictures written to {out}" in lines[0] and lines[0].count(f" of {12 - len(kept)} ")
    assert lines[1].endswith(f" done, {len(kept)} skipped (outputs exist; --overwrite redoes "
                             "them), 1 failed")


def test_a_batch_starts_no_more_jobs_on_a_disk_found_full(
        tmp_path: Path, small_disk: Callable[[str], Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    """`upscale *.png -o out/` is a job each: once one finds the disk full, those after that
    write there are not started (each would run the model only to fail alike); a job writing
    elsewhere still runs."""
    pictures = noise_pictures(tmp_path / "noise", 10)
    out = small_disk("300k") / "out"
    assert main([*map(str, pictures), "-o", f"{out}/", *INSTANT_MODEL, "--quiet"]) == 5
    lines = capsys.readouterr().err.strip().splitlines()
    written = len(list(out.iterdir()))
    assert 0 < written < 10
    assert lines[0].endswith("cannot write: No space left on device"), lines
    assert lines[1:] == [
        f"upscale: error: {9 - written} more jobs not started: their outputs go to the disk "
        "found full; free some space, and the same command does the rest",
        f"upscale: {written} done, 0 skipped, {10 - written} failed"]
    elsewhere = tmp_path / "elsewhere"
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f"defaults: {{model: {INSTANT_MODEL[1]}, executor: onnxruntime}}\n"
                    f"jobs:\n  - {{input: {pictures[-1]}, output: {out / 'last.png'}}}\n"
                    f"  - {{input: {pictures[0]}, output: {elsewhere / 'first.png'}}}\n")
    assert main(["--config", str(jobs), "--quiet"]) == 5
    assert (elsewhere / "first.png").is_file()


def folder_job_under_way(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, list[str]]:
    """The command on a folder of 80 noise pictures (far more than it writes before what the
    test does next lands), once it has written 3: (its process, its output folder, its
    arguments)."""
    from test_video_resume import start, wait_until

    src = tmp_path / "noise"
    noise_pictures(src, 80)
    out = tmp_path / "out"
    args = [str(src), "-o", str(out), *INSTANT_MODEL, "--quiet"]
    proc = start(tmp_path, *args)
    wait_until(proc, lambda: len(list(out.glob("*.png"))) >= 3, "3 pictures were written")
    return proc, out, args


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_folder_stopped_half_way_says_what_it_wrote(tmp_path: Path, sig: int,
                                                      code: int) -> None:
    """Ctrl-C or SIGTERM half-way through a folder: it said "interrupted" and no more. It now
    says how many pictures are there, leaves no partial file, and the rerun does the rest."""
    proc, out, args = folder_job_under_way(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    written = sorted(p.name for p in out.iterdir())
    assert 3 <= len(written) < 80 and not any(n.startswith(".") for n in written)
    assert err.strip().splitlines() == [
        f"upscale: interrupted: {len(written)} of 80 pictures written to {out}; the same "
        "command does the rest"]
    assert main(args) == 0
    assert len(list(out.iterdir())) == 80


def test_an_output_that_appears_while_the_job_runs_is_kept(tmp_path: Path) -> None:
    """Outputs that exist are skipped when a job starts; one that appears after (a second run
    into the same folder, a user saving there) was replaced when the picture was written, with
    exit 0. It now stays, and the job names it and exits 6, as a video's join does."""
    proc, out, _ = folder_job_under_way(tmp_path)
    theirs = [out / "78.png", out / "79.png"]  # the job's last: not written yet
    for path in theirs:
        path.write_bytes(b"someone else's")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 6, err
    assert [path.read_bytes() for path in theirs] == [b"someone else's"] * 2
    assert sorted(err.strip().splitlines()) == sorted([
        *(f"upscale: error: {path}: appeared while it was upscaled; not replaced"
          for path in theirs),
        "upscale: 78 done, 0 skipped, 2 failed"])
    assert len(list(out.iterdir())) == 80  # and no temporary file left


def test_a_write_that_must_not_replace_leaves_what_is_there(tmp_path: Path) -> None:
    from upscaler.errors import OutputExistsError
    from upscaler.media.images.write import atomic_write

    path = tmp_path / "out.png"
    atomic_write(path, b"first", replace=False)
    with pytest.raises(OutputExistsError, match="appeared while it was upscaled"):
        atomic_write(path, b"second", replace=False)
    assert path.read_bytes() == b"first"
    atomic_write(path, b"third")  # --overwrite
    assert path.read_bytes() == b"third"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_a_link_at_the_output_is_an_output_that_exists(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A link that leads nowhere was not taken for an existing output, and the write that must
    not replace anything found the name taken after the model had run: "appeared while it was
    upscaled", exit 6. It is skipped as any output that exists; --overwrite replaces it."""
    src = tmp_path / "a.png"
    Image.fromarray(draw_cel(12, 16)).save(src)
    out = tmp_path / "out.png"
    out.symlink_to(tmp_path / "nowhere.png")
    assert main([str(src), "-o", str(out), *INSTANT_MODEL, "--quiet"]) == 0
    assert capsys.readouterr().err == (f"upscale: {out}: exists, skipped (--overwrite redoes "
                                       "it)\n")
    assert out.is_symlink()
    assert main([str(src), "-o", str(out), *INSTANT_MODEL, "--quiet", "--overwrite"]) == 0
    assert not out.is_symlink()
    with Image.open(out) as written:
        assert written.size == (64, 48)
