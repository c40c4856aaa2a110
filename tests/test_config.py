from pathlib import Path

import pytest

from upscaler.config import Options, load_jobs
from upscaler.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "ep01.mkv").write_bytes(b"")
    (tmp_path / "stills").mkdir(exist_ok=True)
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_defaults_apply_and_jobs_override(tmp_path: Path) -> None:
    path = write(tmp_path, """\
defaults: {model: realesr-animevideov3, crf: 18}
jobs:
  - {input: ep01.mkv, output: out/ep01.mkv}
  - {input: stills/, output: out/stills/, format: png, crf: 20, scale: 2}
""")
    first, second = load_jobs(path)
    assert first.input == tmp_path / "ep01.mkv"
    assert first.output == tmp_path / "out" / "ep01.mkv"
    assert first.options == Options(model="realesr-animevideov3", crf=18)
    assert second.options.format == "png"
    assert second.options.crf == 20
    assert second.options.scale == 2.0
    assert second.options.model == "realesr-animevideov3"


def test_command_line_options_are_defaults_under_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs:\n  - {input: ep01.mkv, tile: 128}\n")
    (job,) = load_jobs(path, Options(tile=64, batch=4))
    assert job.options.tile == 128
    assert job.options.batch == 4
    assert job.output is None


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("jobs:\n  - input: ep01.mkv\n    tiles: 3\n", 3,
         "jobs[1]: unknown key 'tiles'; did you mean 'tile'?"),
        # The command line's spelling of an option, in a job file.
        ("defaults:\n  pix-fmt: yuv420p\njobs:\n  - input: ep01.mkv\n", 2,
         "defaults: unknown key 'pix-fmt'; did you mean 'pix_fmt'?"),
        ("jobs:\n  - input: ep01.mkv\n    crf: high\n", 3, "jobs[1].crf: expected an integer"),
        ("jobs:\n  - input: ep01.mkv\n  - output: x.mkv\n", 3, "jobs[2]: missing key 'input'"),
        # Said once: the key is there, not missing.
        ("jobs:\n  - input: [ep01.mkv]\n", 2, "jobs[1].input: expected a string"),
        ("defaults:\n  overwrite: 3\njobs:\n  - input: ep01.mkv\n", 2, "expected true or false"),
        ("defaults:\n  precision: fp8\njobs:\n  - input: ep01.mkv\n", 2, "precision must be"),
        ("job:\n  - input: ep01.mkv\n", 1, "unknown key 'job'"),
        ("defaults: {}\n", 1, "missing key 'jobs'"),
        ("jobs: []\n", 1, "non-empty list"),
        ("jobs:\n  - input: [ep01.mkv\n", 3, "not valid YAML"),
        ("jobs:\n  - input: ep01.mkv\n    tile: 8\n", 2, "tile must be"),
    ],
)
def test_mistakes_name_the_line_and_key(tmp_path: Path, text: str, line: int,
                                        needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_jobs(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert needle in message


def test_every_mistake_in_a_job_file_is_said_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command: a key or type mistake stopped the reading, so each run showed one
    and the next appeared once it was fixed. Wrong defaults are said once, not again in every
    job that takes them."""
    from upscaler.cli import main

    path = write(tmp_path, "defaults:\n  colour: red\n"
                           "jobs:\n  - input: ep01.mkv\n    scale: two\n    bogus: 1\n"
                           "  - output: x.mkv\n  - input: stills\n    tile: 8\n")
    assert main(["--config", str(path), "--quiet"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"upscale: error: {path}:2: defaults: unknown key 'colour'",
        f"upscale: error: {path}:5: jobs[1].scale: expected a number, got 'two'",
        f"upscale: error: {path}:6: jobs[1]: unknown key 'bogus'",
        f"upscale: error: {path}:7: jobs[2]: missing key 'input'",
        f"upscale: error: {path}:8: jobs[3]: tile must be 0 (no tiling) or at least 16"]
    path = write(tmp_path, "defaults:\n  precision: fp8\n"
                           "jobs:\n  - input: ep01.mkv\n  - input: stills\n")
    assert main(["--config", str(path), "--quiet"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"upscale: error: {path}:2: defaults: precision must be")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read job file"):
        load_jobs(tmp_path / "nope.yaml")


def test_bundled_example_configs_validate() -> None:
    jobs = load_jobs(ROOT / "configs" / "job.yaml")
    assert [j.input.name for j in jobs] == ["clip.mkv", "cel.png"]
    assert jobs[1].options.model == "realesrgan-x4plus-anime"
    hevc, mp4 = load_jobs(ROOT / "configs" / "video.yaml")
    assert (hevc.options.codec, hevc.options.crf, hevc.options.segment_seconds) == (
        "libx265", 18, 4.0)
    assert (mp4.options.codec, mp4.options.scale, mp4.output.suffix) == ("libx264", 2.0, ".mp4")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["video.yaml", "job.yaml"])
def test_bundled_example_configs_run(tmp_path: Path, name: str) -> None:
    """configs/*.yaml as written, run for real: only the bundled samples they name are swapped
    for a tiny clip and a tiny still, so that the test is quick."""
    from clips import make_clip
    from draw import draw_cel
    from PIL import Image

    from upscaler.cli import main
    from upscaler.media.video.probe import probe

    clip = make_clip(tmp_path / "clip.mkv", size="32x18", seconds=0.25)
    Image.fromarray(draw_cel(12, 16)).save(tmp_path / "cel.png")
    text = (ROOT / "configs" / name).read_text(encoding="utf-8")
    swaps = {"../samples/clip.mkv": str(clip), "../samples/cel.png": str(tmp_path / "cel.png"),
             "../samples/out/": "out/"}
    for old, new in swaps.items():
        text = text.replace(old, new)
    assert "../samples" not in text  # every path the file names was swapped
    config = tmp_path / name
    config.write_text(text, encoding="utf-8")
    assert main(["--config", str(config), "--quiet"]) == 0

    jobs = load_jobs(config)
    assert jobs and all(job.output is not None and job.output.is_file() for job in jobs)
    for job in jobs:
        assert job.output is not None
        if job.output.suffix == ".webp":
            with Image.open(job.output) as im:
                assert im.size == (64, 48)
            continue
        info, scale = probe(job.output), job.options.scale or 4
        assert (info.width, info.height) == (32 * scale, 18 * scale)
        assert info.frame_count == probe(clip).frame_count
        assert info.codec == {"libx265": "hevc", "libx264": "h264"}[job.options.codec or "libx264"]
