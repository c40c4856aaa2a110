"""YAML batches as a user runs them: again after adding a job, with mistakes, with a bad input."""

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from draw import draw_cel
from PIL import Image

from upscaler.cli import main


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_jobs(tmp_path: Path, *jobs: str) -> Path:
    path = tmp_path / "jobs.yaml"
    body = "".join(f"  - {job}\n" for job in jobs)
    path.write_text(f"defaults: {{model: realesr-animevideov3}}\njobs:\n{body}", encoding="utf-8")
    return path


def run(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    code = main(["--config", str(path), "--quiet", *extra])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def stills(tmp_path: Path) -> Path:
    save(tmp_path / "a.png", draw_cel(12, 12))
    save(tmp_path / "b.png", draw_cel(12, 16, seed=1))
    return tmp_path


def test_a_batch_runs_again_after_a_job_is_added(stills: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    jobs = write_jobs(stills, "{input: a.png, output: out/a.png}")
    assert run(jobs, capsys) == (0, [])
    first = (stills / "out" / "a.png").stat().st_mtime_ns

    jobs = write_jobs(stills, "{input: a.png, output: out/a.png}",
                      "{input: b.png, output: out/b.png}")
    code, err = run(jobs, capsys)
    assert code == 0
    assert err == [f"upscale: {stills / 'out' / 'a.png'}: exists, skipped (--overwrite redoes it)",
                   "upscale: 1 done, 1 skipped (outputs exist; --overwrite redoes them), 0 failed"]
    assert (stills / "out" / "a.png").stat().st_mtime_ns == first
    with Image.open(stills / "out" / "b.png") as im:
        assert im.size == (64, 48)

    code, err = run(jobs, capsys, "--overwrite")
    assert code == 0 and err == ["upscale: 2 done, 0 skipped, 0 failed"]
    assert (stills / "out" / "a.png").stat().st_mtime_ns != first


def test_every_mistake_is_found_before_any_job_runs(stills: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    jobs = write_jobs(stills,
                      "{input: a.png, output: out/a.png}",
                      "{input: b.png, output: out/b.png, model: realesrgan-x4plus-animee}",
                      "{input: nothere.png, output: out/c.png}",
                      "{input: b.png, output: out/a.png}",
                      "{input: b.png, output: a.png}",
                      "{input: '~/b.png', output: out/d.jpg, format: png}")
    code, err = run(jobs, capsys)
    assert code == 5  # the worst: a missing input, 5 as on the command line
    err = [line.removeprefix("upscale: error: ") for line in err]
    assert err[0].startswith(f"{jobs}:4: ") and "unknown model" in err[0]
    assert err[1] == f"{jobs}:5: {stills / 'nothere.png'}: input does not exist"
    assert err[2] == f"{jobs}:6: {stills / 'out' / 'a.png'}: is written by two jobs (also from " \
                     f"{stills / 'a.png'})"
    assert err[3] == f"{jobs}:7: {stills / 'a.png'}: is the input of another job"
    assert err[4] == f"{jobs}:8: {Path.home() / 'b.png'}: input does not exist"  # ~ expanded
    assert len(err) == 5
    assert not (stills / "out").exists()  # nothing ran, nothing was written


def test_a_failed_job_does_not_stop_the_others(stills: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """And a job that fails as it runs is named by its line in the job file, as a mistake
    found before any work is (it was named by its input alone, hard to find in a long file)."""
    (stills / "broken.png").write_bytes(b"not a picture")
    save(stills / "folder" / "fine.png", draw_cel(12, 12))
    (stills / "folder" / "bad.png").write_bytes(b"not a picture either")
    jobs = write_jobs(stills, "{input: broken.png, output: out/broken.png}",
                      "{input: a.png, output: out/a.png}",
                      "{input: folder, output: out/folder/}")
    code, err = run(jobs, capsys)
    assert code == 5
    assert err[0].startswith(f"upscale: error: {jobs}:3: {stills / 'broken.png'}: not an image")
    assert err[1].startswith(f"upscale: error: {jobs}:5: {stills / 'folder' / 'bad.png'}: "
                             "not an image")
    assert err[2] == "upscale: 2 done, 0 skipped, 2 failed"  # pictures counted one by one
    assert sorted(p.name for p in (stills / "out").iterdir()) == ["a.png", "folder"]


def test_a_job_writing_another_jobs_input_by_another_path_is_refused(
        stills: Path, bind_mount: Callable[[Path], Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Jobs of a batch were told apart by their paths: a job writing another's input picture,
    or into another's input folder, through a bind mount ran, and the input was replaced."""
    save(stills / "src" / "p.png", draw_cel(12, 12))
    save(stills / "folder" / "q.png", draw_cel(12, 12))
    view, folder_view = bind_mount(stills / "src"), bind_mount(stills / "folder")
    before = (stills / "src" / "p.png").read_bytes()
    jobs = write_jobs(stills, "{input: src/p.png, output: out1/p.png}",
                      f"{{input: a.png, output: {view / 'p.png'}, overwrite: true}}",
                      "{input: folder, output: out2}",
                      f"{{input: b.png, output: {folder_view / 'new.png'}}}")
    code, err = run(jobs, capsys)
    assert code == 2, err
    assert err[0] == f"upscale: error: {jobs}:4: {view / 'p.png'}: is the input of another job"
    assert err[1] == (f"upscale: error: {jobs}:6: {folder_view / 'new.png'}: is inside the "
                      f"input folder of another job ({stills / 'folder'}), which would upscale "
                      "it again")
    assert (stills / "src" / "p.png").read_bytes() == before


def test_video_settings_are_tried_before_any_job_runs(stills: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from clips import make_clip

    make_clip(stills / "ep.mkv", size="32x18", seconds=0.25)
    jobs = write_jobs(stills, "{input: a.png, output: out/a.png}",
                      "{input: ep.mkv, output: out/ep.mkv, pix_fmt: yuv999p}",
                      "{input: ep.mkv, output: out/ep.webm, codec: libx264}")
    code, err = run(jobs, capsys)
    assert code == 2
    assert err[0].startswith(f"upscale: error: {jobs}:4: ") and "yuv999p" in err[0]
    assert err[1].startswith(f"upscale: error: {jobs}:5: ") and "libx264" in err[1]
    assert len(err) == 2
    assert not (stills / "out").exists()


def test_a_rerun_skips_finished_videos_without_trying_their_settings(
        stills: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The season was upscaled on a Mac; the batch is rerun on Linux after one more job was added.
    import shutil

    from clips import make_clip

    make_clip(stills / "ep.mkv", size="32x18", seconds=0.25)
    (stills / "out").mkdir()
    shutil.copy(stills / "ep.mkv", stills / "out" / "ep.mkv")  # what the Mac wrote
    jobs = write_jobs(stills, "{input: ep.mkv, output: out/ep.mkv, codec: hevc_videotoolbox}",
                      "{input: a.png, output: out/a.png}")
    code, err = run(jobs, capsys)
    assert code == 0
    assert err == [f"upscale: {stills / 'out' / 'ep.mkv'}: exists, skipped (--overwrite redoes it)",
                   "upscale: 1 done, 1 skipped (outputs exist; --overwrite redoes them), 0 failed"]

    code, err = run(jobs, capsys, "--overwrite")  # redoing it is tried first, and refused here
    assert code == 2
    assert err == [f"upscale: error: {jobs}:3: {stills / 'out' / 'ep.mkv'}: --codec "
                   "hevc_videotoolbox: this ffmpeg has no encoder named 'hevc_videotoolbox'"]


def test_a_batch_keeps_its_model_for_the_next_job_like_it(tmp_path: Path) -> None:
    """Upscalers: the same model options and media get the same upscaler, loaded once, its
    counters at zero for each job (an output's format is no model option); other model options
    (--tta: a Ray worker kept the plain model for a --tta job before) close it and load
    another."""
    from conftest import ROOT

    from upscaler.config import Options
    from upscaler.pipeline import Upscalers

    options = Options(model=str(ROOT / "tests" / "data" / "nearest4x.onnx"),
                      executor="onnxruntime")
    with Upscalers() as upscalers:
        first = upscalers.get(options, "image")
        first.upscale_frame(draw_cel(8, 8))
        assert first.frames.frames_run == 1
        again = upscalers.get(options, "image")
        assert again is first and again.frames.frames_run == 0
        assert upscalers.get(dataclasses.replace(options, format="webp"), "image") is first
        other = upscalers.get(dataclasses.replace(options, tta=True), "image")
        assert other is not first and first.executor._closed
    assert other.executor._closed


def test_videos_in_one_command_each_report_their_own_frames(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two clips on one command line share the model, then the still loads the image model;
    each clip's report counts its own frames only."""
    from clips import make_clip

    clips = [make_clip(tmp_path / f"ep{n}.mkv", size="32x18", seconds=0.5) for n in (1, 2)]
    still = save(tmp_path / "still.png", draw_cel(12, 16))
    out = tmp_path / "out"
    assert main([str(clips[0]), str(clips[1]), str(still), "-o", f"{out}/", "--model",
                 "realesr-animevideov3", "--deinterlace", "off"]) == 0
    err = capsys.readouterr().err
    reports = [line.split(": ", 2)[2] for line in err.splitlines()
               if "held drawings reused" in line]
    assert len(reports) == 2 and reports[0] == reports[1], reports
    assert "of 12 tiles" in reports[0]
    assert sorted(p.name for p in out.iterdir()) == ["ep1.mkv", "ep2.mkv", "still.png"]


def test_an_output_inside_another_jobs_input_folder_is_refused(
        stills: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder job reads what its folder holds when it runs: another job's output written
    there was upscaled again (16x) on one run and not on another. Refused before any work, as
    an output that is another job's input file is."""
    save(stills / "shots" / "c.png", draw_cel(12, 12))
    jobs = write_jobs(stills, "{input: a.png, output: shots/}",
                      "{input: shots, output: big/}")
    code, err = run(jobs, capsys)
    assert code == 2
    assert err == [f"upscale: error: {jobs}:3: {stills / 'shots' / 'a.png'}: is inside the "
                   f"input folder of another job ({stills / 'shots'}), which would upscale it "
                   "again"]
    assert not (stills / "big").exists() and not (stills / "shots" / "a.png").exists()
    # The same typed: a picture beside its input, in a folder the command also takes.
    assert main([str(stills / "shots" / "c.png"), str(stills / "shots"), "--model",
                 "realesr-animevideov3", "--quiet"]) == 2
    assert "c_upscaled.png: is inside the input folder of another job" in capsys.readouterr().err


def test_o_with_a_job_file_says_where_outputs_go(stills: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """It said "give either --config or an input, not both", where no input was given."""
    jobs = write_jobs(stills, "{input: a.png}")
    assert run(jobs, capsys, "-o", str(stills / "out")) == (2, [
        "upscale: error: -o goes with an input; a job file names each job's output"])
