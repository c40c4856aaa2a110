"""README's examples run as written: its `upscale` command lines, and its and docs/api.md's
Python code."""

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from clips import make_clip
from conftest import psnr
from draw import draw_cel
from PIL import Image
from reference import ncnn_upscale, record_against_ncnn

from upscaler.borders import crop_frame, pad_frame
from upscaler.cli import main
from upscaler.executors.registry import resolve_auto
from upscaler.models.registry import resolve_model

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
API_DOC = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")


def _commands() -> list[str]:
    """Every indented `upscale ...` line, also after `&&` (the set-up line)."""
    found = []
    for line in README.splitlines():
        if line.startswith("    ") and "upscale " in line:
            command = line.strip().split("&& ")[-1]
            if command.startswith("upscale "):
                found.append(command)
    return found


def _python_blocks() -> list[str]:
    return [block for text in (README, API_DOC)
            for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder laid out as README's examples expect: the samples, configs, a video, a folder."""
    for name in ("samples", "configs"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("out", "__pycache__"))
    make_clip(tmp_path / "video.mp4", size="32x18", seconds=0.25, audio=True)
    (tmp_path / "dir").mkdir()
    Image.fromarray(draw_cel(12, 16)).save(tmp_path / "dir" / "still.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_has_the_examples_this_test_runs() -> None:
    assert len(_commands()) >= 4 and len(_python_blocks()) >= 1


@pytest.mark.slow
def test_readme_commands_run(workdir: Path) -> None:
    for command in _commands():
        assert main([*shlex.split(command)[1:], "--quiet"]) == 0, command
    assert (workdir / "out.mp4").exists()
    assert (workdir / "dir_upscaled" / "still.png").exists()
    assert (workdir / "samples" / "out" / "clip_x4.mkv").exists()
    assert (workdir / "samples" / "out" / "cel_x4.webp").exists()
    assert (workdir / "samples" / "out" / "clip_compare.html").exists()
    _bundled_still_is_ncnns(workdir / "samples")


def _bundled_still_is_ncnns(samples: Path) -> None:
    """The job file's still (samples/cel.png, x4plus-anime, lossless WebP) through the defaults
    (the auto executor, its tile plan, the border padding) is what Tencent's ncnn gives on the
    whole padded picture: measured 94.6 dB (a few pixels 1 level off). Against the unpadded
    picture it scores 45.8 dB, all of it at the edges."""
    model = resolve_model("realesrgan-x4plus-anime")
    with Image.open(samples / "cel.png") as image:
        cel = np.asarray(image.convert("RGB"))
    with Image.open(samples / "out" / "cel_x4.webp") as image:
        ours = np.asarray(image.convert("RGB"))
    assert ours.shape == (cel.shape[0] * 4, cel.shape[1] * 4, 3)
    executor = resolve_auto(model)
    if executor == "ncnn":
        # `auto` ran Tencent's ncnn itself: the reference would spend 8 s of the suite on
        # ncnn against ncnn. The steps around it have their own tests: the padding
        # (test_borders.py), whole frames by default (test_cli.py), ncnn's pixel edge
        # (test_tail.py, test_families.py). Where `auto` picks another runtime (Core ML on the
        # macOS job), this is its check on the bundled still.
        return
    expected = crop_frame(ncnn_upscale(model, pad_frame(cel, model.border)), model.border * 4)
    db = psnr(ours, expected, 255)
    record_against_ncnn(f"{executor}, {model.name}, defaults, samples/cel.png", db)
    # Where `auto` picks Core ML (macOS), it computes in fp16: the default precision keeps
    # >= 45 dB (README), not the 85 dB of an fp32 CPU executor.
    assert db >= (45 if executor == "coreml" else 85)


def test_readme_python_runs_and_prints_what_it_says(workdir: Path) -> None:
    for block in _python_blocks():
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, "README.md or docs/api.md", "exec"), {})
        said = [line.split("# ", 1)[1] for line in block.splitlines()
                if line.strip().startswith("print(") and "# " in line]
        lines = printed.getvalue().splitlines()
        assert len(lines) == len(said)
        for got, expected in zip(lines, said, strict=True):
            assert expected.startswith(got), (got, expected)
