"""README's examples run as written: its `upscale` command lines, and its and docs/api.md's
Python code."""

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest
from clips import make_clip
from draw import draw_cel
from PIL import Image

from upscaler.cli import main

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
