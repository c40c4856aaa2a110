"""The layout shows the architecture: the frame side (tiling, borders, reuse, channels, the
executor's edge) never reaches into file handling (media/, job/), directly or through another
module of ours."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "upscaler"
FRAME_SIDE = ["borders", "channels", "dirty", "frame_upscaler", "image_data", "pixels", "reuse",
              "tiling"]
FILE_SIDE = ("upscaler.media", "upscaler.job")


def imports_of(module: str) -> set[str]:
    """The upscaler modules `module` imports (at any depth of its code)."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("upscaler"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if PACKAGE.joinpath(*node.module.split(".")[1:], a.name).exists()
                         or PACKAGE.joinpath(*node.module.split(".")[1:], f"{a.name}.py").exists())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("upscaler"))
    return found


@pytest.mark.parametrize("module", FRAME_SIDE)
def test_frame_side_imports_no_file_handling(module: str) -> None:
    seen, todo = set(), [f"upscaler.{module}"]
    while todo:
        current = todo.pop()
        if current in seen or not (PACKAGE.joinpath(*current.split(".")[1:]).is_dir()
                                   or PACKAGE.joinpath(*current.split(".")[1:]).with_suffix(
                                       ".py").exists()):
            continue
        seen.add(current)
        todo += imports_of(current)
    reached = sorted(m for m in seen if m.startswith(FILE_SIDE))
    assert not reached, f"upscaler.{module} reaches {reached}"


def test_media_is_grouped_by_what_it_serves() -> None:
    media = PACKAGE / "media"
    assert sorted(p.name for p in media.iterdir() if p.suffix == ".py") == [
        "__init__.py", "ffmpeg.py", "ffmpeg_facts.py"]
    assert (media / "images" / "read.py").exists() and (media / "video" / "reader.py").exists()
    assert {p.name for p in (PACKAGE / "job").glob("*.py")} >= {"plan.py", "resume.py",
                                                                "preflight.py", "space.py"}
