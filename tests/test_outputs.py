"""Where outputs go and what is refused before any work, as a user types it on the command line."""

import os
from pathlib import Path

import numpy as np
import PIL.ImageColor
import pytest
from draw import draw_cel
from PIL import Image

from upscaler.cli import main

FAST = ["--model", "realesr-animevideov3", "--quiet"]


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return save(tmp_path / "img.png", draw_cel(12, 16))


def test_output_in_folders_that_do_not_exist_yet(tmp_path: Path, img: Path) -> None:
    out = tmp_path / "newdir" / "sub" / "out.png"
    assert main([str(img), "-o", str(out), *FAST]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (64, 48)


def test_trailing_slash_means_a_folder(tmp_path: Path, img: Path) -> None:
    assert main([str(img), "-o", str(tmp_path / "somedir") + os.sep, *FAST]) == 0
    assert (tmp_path / "somedir").is_dir()
    assert files(tmp_path / "somedir") == ["img.png"]
    # An existing folder without the slash is a folder too; the input's own folder gets the
    # suffixed name instead of the input's.
    assert main([str(img), "-o", str(tmp_path), *FAST]) == 0
    assert (tmp_path / "img_upscaled.png").exists()


@pytest.mark.parametrize(
    ("name", "extra", "needle"),
    [
        ("out.jpg", ["--format", "png"], "the name says JPEG but --format says PNG"),
        ("out.xyz", [], ".xyz is not an image format we write"),
        ("noext", [], "has no extension"),
        ("out.PNG", ["--format", "jpg"], "the name says PNG but --format says JPEG"),
    ],
)
def test_name_and_format_must_agree(tmp_path: Path, img: Path, capsys: pytest.CaptureFixture[str],
                                    name: str, extra: list[str], needle: str) -> None:
    assert main([str(img), "-o", str(tmp_path / name), *extra, *FAST]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith(f"upscale: error: {tmp_path / name}: ") and needle in line
    assert files(tmp_path) == ["img.png"]


def test_a_name_without_extension_takes_the_format(tmp_path: Path, img: Path) -> None:
    assert main([str(img), "-o", str(tmp_path / "noext"), "--format", "webp", *FAST]) == 0
    with Image.open(tmp_path / "noext") as im:
        assert im.format == "WEBP"
    assert main([str(img), "-o", str(tmp_path / "same.jpeg"), "--format", "jpg", *FAST]) == 0


def test_a_folder_whose_output_is_itself_is_refused_so(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`--suffix ''` made the output folder the input folder, refused as "inside" it."""
    src = tmp_path / "stills"
    save(src / "pic.png", draw_cel(12, 12))
    for args in (["--suffix", ""], ["-o", str(src)]):
        assert main([str(src), *args, *FAST]) == 2
        assert error_lines(capsys) == [f"upscale: error: {src}: the output folder would be the "
                                       "input folder, whose pictures it would overwrite"]
    assert files(src) == ["pic.png"]


def test_two_images_that_would_become_one_file(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Every pair is named at once (only the first was, so a run found one at a time)."""
    src = tmp_path / "stills"
    save(src / "pic.jpg", draw_cel(12, 12))
    save(src / "pic.png", draw_cel(12, 12, seed=1))
    save(src / "Q.jpeg", draw_cel(12, 12, seed=2))
    save(src / "Q.png", draw_cel(12, 12, seed=3))
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "--format", "webp", *FAST]) == 2
    (line,) = error_lines(capsys)
    assert line == (f"upscale: error: {src}: Q.jpeg and Q.png would both be written to "
                    f"{out / 'Q.webp'}; pic.jpg and pic.png would both be written to "
                    f"{out / 'pic.webp'}; rename one of each, or leave out --format")
    assert not out.exists()
    assert main([str(src), "-o", str(out), *FAST]) == 0  # without --format both are kept
    assert files(out) == ["Q.jpeg", "Q.png", "pic.jpg", "pic.png"]


@pytest.mark.parametrize("suffix", [".avi", ".ts"])
def test_default_video_output_is_a_container_we_write(tmp_path: Path, suffix: str) -> None:
    from clips import make_clip

    from upscaler.media.video.probe import probe

    src = make_clip(tmp_path / f"clip{suffix}", size="32x18", seconds=0.25)
    assert main([str(src), *FAST]) == 0
    out = tmp_path / "clip_upscaled.mkv"
    info = probe(out)
    assert (info.width, info.height) == (128, 72)
    assert info.frame_count == probe(src).frame_count


def test_video_output_names_that_cannot_be_written(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from clips import make_clip

    src = make_clip(tmp_path / "clip.mkv", size="32x18", seconds=0.25)
    assert main([str(src), "-o", str(tmp_path / "out.avi"), *FAST]) == 2
    assert "cannot write video as .avi" in error_lines(capsys)[0]
    (tmp_path / "out.mkv").mkdir()  # a folder named like the output
    assert main([str(src), "-o", str(tmp_path / "out.mkv"), *FAST]) == 2
    assert "is a folder; give a file name" in error_lines(capsys)[0]
    (tmp_path / "videos").mkdir()  # an existing folder: the output goes inside
    assert main([str(src), "-o", str(tmp_path / "videos"), *FAST]) == 0
    assert files(tmp_path / "videos") == ["clip.mkv"]


@pytest.mark.parametrize("container", ["mp4", "matroska", "avi", "mpegts"])
def test_a_video_under_a_picture_name_is_told_so(tmp_path: Path, container: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A video named .png was "not an image, or in a format we cannot read", where a picture
    named .mkv is told what it holds; an empty picture file said the same."""
    from upscaler.media import ffmpeg

    src = tmp_path / "clip.png"
    ffmpeg.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                "testsrc=s=32x18:r=12:d=0.5", "-c:v", "mpeg4", "-f", container, str(src)], src)
    assert main([str(src), *FAST]) == 5
    assert error_lines(capsys) == [
        f"upscale: error: {src}: holds a video, not a picture; give it the video's extension "
        "to upscale it as a video"]
    empty = tmp_path / "empty.webp"
    empty.write_bytes(b"")
    assert main([str(empty), *FAST]) == 5
    assert error_lines(capsys) == [f"upscale: error: {empty}: an empty file, no image"]


@pytest.mark.parametrize(("name", "fmt", "said"),
                         [("cel.mkv", "PNG", "PNG"), ("cel.mp4", "JPEG", "JPEG"),
                          ("cel.webm", "WEBP", "WEBP")])
def test_a_picture_under_a_video_name_is_refused(tmp_path: Path, name: str, fmt: str, said: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Taken for a video by its name, it came out as one frame of H.264, alpha and depth gone.
    src = tmp_path / name
    Image.fromarray(draw_cel(12, 16)).save(src, format=fmt)
    assert main([str(src), *FAST]) == 5
    assert error_lines(capsys) == [
        f"upscale: error: {src}: holds a {said} picture, not a video; give it the picture's "
        "extension to upscale it as an image"]
    assert files(tmp_path) == [name]


def test_a_video_named_with_a_line_break(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Linux lets a name hold a line break. The segments were joined through a list that
    ffmpeg reads line by line and which named their folder (.NAME.segments): the job failed at
    its end, every time it was run again. Messages naming such a file stay one line each."""
    from clips import make_clip
    from conftest import INSTANT_MODEL

    from upscaler.media.video.probe import probe

    src = make_clip(tmp_path / "it's\nep 1.mkv", size="32x18", seconds=1.0)
    args = [str(src), *INSTANT_MODEL, "--segment-seconds", "0.25", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    out = tmp_path / "it's\nep 1_upscaled.mkv"
    assert probe(out).frame_count == probe(src).frame_count == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name])
    capsys.readouterr()
    assert main(args) == 0
    assert error_lines(capsys) == [
        f"upscale: {tmp_path}/it's\\nep 1_upscaled.mkv: exists, skipped (--overwrite redoes "
        "it)"]
    assert main([str(tmp_path / "gone\n.mkv"), *FAST]) == 5
    assert error_lines(capsys) == [f"upscale: error: {tmp_path}/gone\\n.mkv: input does not exist"]


@pytest.mark.parametrize(
    ("output", "extra", "needle", "code"),
    [
        ("{tmp}/fold/x.png", [], "fold is a file", 2),
        ("/proc/x.png", [], "cannot write in /proc", 5),
        (None, ["--suffix", "/../evil"], "suffix must be part of a file name", 2),
    ],
)
def test_unwritable_outputs_are_one_line_errors(tmp_path: Path, img: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                output: str | None, extra: list[str],
                                                needle: str, code: int) -> None:
    (tmp_path / "fold").write_text("a file, not a folder")
    args = [str(img), *extra, *FAST]
    if output:
        args += ["-o", output.format(tmp=tmp_path)]
    assert main(args) == code
    (line,) = error_lines(capsys)
    assert line.startswith("upscale: error: ") and needle in line, line
    assert files(tmp_path) == ["fold", "img.png"]


def test_transparency_to_jpeg_needs_a_background(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rgba = np.dstack([draw_cel(16, 16), np.zeros((16, 16), np.uint8)])
    rgba[4:12, 4:12, 3] = 255  # an opaque square on a transparent sheet
    src = save(tmp_path / "sprite.png", rgba)
    cache = tmp_path / "cache"
    monkeypatch.setenv("UPSCALER_CACHE_DIR", str(cache))
    out = tmp_path / "sprite.jpg"
    # Refused before the model is even loaded: ONNX Runtime would have built its model.
    assert main([str(src), "-o", str(out), "--executor", "onnxruntime", *FAST]) == 2
    (line,) = error_lines(capsys)
    assert "JPEG cannot store transparency" in line and "--background" in line
    assert not out.exists() and not cache.exists()

    # A CSS colour name too, also once Pillow has looked it up itself (it then keeps a tuple
    # in its table, which a lookup of our own read as text and crashed on).
    PIL.ImageColor.getrgb("lime")
    for colour in ("#00ff00", "Lime"):
        assert main([str(src), "-o", str(out), "--background", colour, "--overwrite",
                     *FAST]) == 0
        with Image.open(out) as im:
            pixels = np.asarray(im.convert("RGB")).astype(int)
        assert pixels.shape == (64, 64, 3)
        corner = pixels[:8, :8].reshape(-1, 3)  # fully transparent: the background alone
        assert np.abs(corner - [0, 255, 0]).max() <= 3


@pytest.mark.parametrize("colour", ["reddish", "#12345", "1,2", "300,0,0"])
def test_bad_background_colours(img: Path, capsys: pytest.CaptureFixture[str],
                                colour: str) -> None:
    assert main([str(img), "--background", colour, *FAST]) == 2
    assert "background must be" in error_lines(capsys)[0]


def test_folder_says_what_it_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from clips import make_clip

    src = tmp_path / "mixed"
    save(src / "a.png", draw_cel(12, 12))
    make_clip(src / "ep.mkv", size="32x18", seconds=0.25)
    (src / "notes.txt").write_text("hello")
    assert main([str(src), "-o", str(tmp_path / "out"), *FAST]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 video (ep.mkv): a folder job takes images" in err
    assert "skipped 1 other file (notes.txt): not images we read" in err
    assert files(tmp_path / "out") == ["a.png"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), *FAST]) == 5
    (line,) = error_lines(capsys)
    assert line == f"upscale: error: {empty}: no images to upscale in this folder (it is empty)"
    assert not (tmp_path / "empty_upscaled").exists()


def test_tilde_means_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    save(tmp_path / "img.png", draw_cel(12, 12))
    assert main(["~/img.png", "-o", "~/out/big.png", *FAST]) == 0
    assert (tmp_path / "out" / "big.png").exists()


def test_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save(tmp_path / "pics" / "a.png", draw_cel(12, 12))
    monkeypatch.chdir(tmp_path / "pics")
    assert main([".", *FAST]) == 0
    assert files(tmp_path / "pics_upscaled") == ["a.png"]


def test_several_inputs_as_a_shell_glob_gives_them(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`upscale ep*.mkv still.png -o out/`: a batch, each input into the folder; options may
    come between them; a rerun skips what is done; a file name for -o, or two inputs that
    would make one output, are refused before anything is written."""
    from clips import make_clip
    from conftest import INSTANT_MODEL

    eps = [make_clip(tmp_path / f"ep{n}.mkv", size="32x18", seconds=0.25) for n in (1, 2)]
    still = save(tmp_path / "still.png", draw_cel(12, 16))
    out = tmp_path / "out"
    args = [str(eps[0]), "-o", f"{out}{os.sep}", str(eps[1]), str(still), *INSTANT_MODEL, "-q"]
    assert main(args) == 0
    assert files(out) == ["ep1.mkv", "ep2.mkv", "still.png"]
    assert error_lines(capsys)[-1] == "upscale: 3 done, 0 skipped, 0 failed"
    assert main(args) == 0
    assert error_lines(capsys)[-1] == ("upscale: 0 done, 3 skipped (outputs exist; --overwrite "
                                       "redoes them), 0 failed")

    assert main([*map(str, eps), "-o", str(tmp_path / "both.mkv"), *INSTANT_MODEL, "-q"]) == 2
    assert error_lines(capsys) == [
        f"upscale: error: {tmp_path / 'both.mkv'}: 2 inputs go into a folder, and -o names a "
        f"file: end it with / to make it one ({tmp_path / 'both.mkv'}/)"]
    other = tmp_path / "other"
    other.mkdir()
    twin = make_clip(other / "ep1.mkv", size="32x18", seconds=0.25)
    assert main([str(eps[0]), str(twin), "-o", str(tmp_path / "new"), *INSTANT_MODEL, "-q"]) == 2
    (line,) = error_lines(capsys)
    assert "new/ep1.mkv: is written by two jobs" in line
    assert not (tmp_path / "new").exists() and not (tmp_path / "both.mkv").exists()
    # Without -o, each beside its own input.
    assert main([str(eps[0]), str(twin), *INSTANT_MODEL, "-q"]) == 0
    assert (tmp_path / "ep1_upscaled.mkv").exists() and (other / "ep1_upscaled.mkv").exists()


def test_several_folders_go_each_into_its_own_folder(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`upscale season1 season2 -o out/` mixed both folders' pictures in out/, and refused
    the batch outright where they shared names (001.png in each). Each goes under its own
    name now, as a single picture or video goes under its own; one folder alone still
    mirrors into -o itself."""
    for season, names in (("season1", ["001.png"]), ("season2", ["001.png", "002.png"])):
        for name in names:
            save(tmp_path / season / name, draw_cel(12, 16))
    still = save(tmp_path / "still.png", draw_cel(12, 16))
    out = tmp_path / "out"
    args = [str(tmp_path / "season1"), str(tmp_path / "season2"), str(still), "-o", str(out),
            *FAST]
    assert main(args) == 0
    assert files(out) == ["season1", "season1/001.png", "season2", "season2/001.png",
                          "season2/002.png", "still.png"]
    assert error_lines(capsys) == ["upscale: 4 done, 0 skipped, 0 failed"]
    assert main([str(tmp_path / "season1"), "-o", str(tmp_path / "one"), *FAST]) == 0
    assert files(tmp_path / "one") == ["001.png"]
    # Two folders of one name from two places, or a folder and a picture of one name, would
    # go to one place: refused before any work, naming both.
    save(tmp_path / "other" / "season1" / "009.png", draw_cel(12, 16))
    save(tmp_path / "pics" / "x.png" / "a.png", draw_cel(12, 16))
    save(tmp_path / "more" / "x.png", draw_cel(12, 16))
    capsys.readouterr()
    for inputs, said in [
        (["season1", "other/season1"], "new/season1: is the output folder of two jobs (also of "
         f"{tmp_path / 'season1'}), whose pictures would mix; give each its own -o"),
        (["more/x.png", "pics/x.png"], f"new/x.png: is the output folder of {tmp_path}/pics/"
         f"x.png and the output of {tmp_path}/more/x.png")]:
        assert main([*(str(tmp_path / i) for i in inputs), "-o", str(tmp_path / "new"),
                     *FAST]) == 2
        assert error_lines(capsys) == [f"upscale: error: {tmp_path}/{said}"]
        assert not (tmp_path / "new").exists()


def test_a_folder_where_a_pictures_output_goes_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It was counted as an output that exists and skipped ("1 skipped"), or with --overwrite
    the model ran and the write failed; a single picture's job refused it before any work."""
    save(tmp_path / "stills" / "a.png", draw_cel(12, 16))
    save(tmp_path / "stills" / "b.png", draw_cel(12, 16))
    (tmp_path / "out" / "b.png").mkdir(parents=True)
    for extra in ([], ["--overwrite"]):
        assert main([str(tmp_path / "stills"), "-o", str(tmp_path / "out"), *FAST, *extra]) == 2
        assert error_lines(capsys) == [
            f"upscale: error: {tmp_path / 'out' / 'b.png'}: the output of b.png is a folder"]
        assert files(tmp_path / "out") == ["b.png"]


def test_quality_of_jpeg_and_webp_outputs(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--quality reaches every way a picture is written: a folder's writer threads, a single
    picture, a job file; without it JPEG keeps 95 and WebP from a PNG stays lossless."""
    from conftest import INSTANT_MODEL

    from upscaler.media.images import read_image

    stills = tmp_path / "stills"
    for name in ("a.png", "b.png"):
        save(stills / name, draw_cel(24, 32))
    assert main([str(stills), "-o", str(tmp_path / "q80"), "--format", "jpg", "--quality", "80",
                 *INSTANT_MODEL, "--quiet"]) == 0
    assert [read_image(tmp_path / "q80" / n).quality for n in ("a.jpg", "b.jpg")] == [80, 80]
    assert main([str(stills), "-o", str(tmp_path / "plain"), "--format", "jpg", *INSTANT_MODEL,
                 "--quiet"]) == 0
    assert read_image(tmp_path / "plain" / "a.jpg").quality == 95
    assert (tmp_path / "q80" / "a.jpg").stat().st_size < (
        tmp_path / "plain" / "a.jpg").stat().st_size
    for extra, lossless in (([], True), (["--quality", "70"], False)):
        out = tmp_path / f"w{len(extra)}.webp"
        assert main([str(stills / "a.png"), "-o", str(out), *extra, *INSTANT_MODEL,
                     "--quiet"]) == 0
        assert read_image(out).lossless is lossless
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f"defaults: {{quality: 85, model: {INSTANT_MODEL[1]}, executor: onnxruntime}}\n"
                    f"jobs:\n  - {{input: {stills / 'b.png'}, output: {tmp_path / 'job.jpg'}}}\n")
    assert main(["--config", str(jobs), "--quiet"]) == 0
    assert read_image(tmp_path / "job.jpg").quality == 85
    capsys.readouterr()
    assert main([str(stills / "a.png"), "-o", str(tmp_path / "x.jpg"), "--quality", "0"]) == 2
    assert error_lines(capsys) == ["upscale: error: --quality must be in [1, 100]"]


def test_outputs_whose_names_are_as_long_as_a_file_system_takes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A picture's temporary file, a video's segment folder and partial output add to the
    output's name; at 240-odd bytes (fansubs' names run long, and Japanese takes 3 bytes a
    character) they were too long a name, and the job failed though its output's name was
    fine. They now keep what fits of the name and a hash of it."""
    from clips import make_clip
    from conftest import INSTANT_MODEL

    from upscaler.media.images.write import temporary_name
    from upscaler.media.video.probe import probe

    stem = "アニメ" * 26 + "第1話" + "x" * 6  # 247 bytes
    picture = save(tmp_path / f"{stem}.png", draw_cel(12, 16))
    out = tmp_path / f"{stem}.out.png"
    assert len(out.name.encode()) == 255
    assert main([str(picture), "-o", str(out), *INSTANT_MODEL, "--quiet"]) == 0
    with Image.open(out) as done_picture:
        assert done_picture.size == (64, 48)
    left = temporary_name(out)  # what a killed run leaves: the rerun removes it
    assert len(left.name.encode()) <= 255
    left.write_bytes(b"half")
    assert main([str(picture), "-o", str(out), *INSTANT_MODEL, "--quiet"]) == 0
    assert not left.exists()
    clip = make_clip(tmp_path / "clip.mkv", size="32x18", seconds=0.5)
    video = clip.rename(tmp_path / f"{stem[:-6]}.mkv")
    done = tmp_path / f"{stem[:-6]}_upscaled.mkv"
    assert len(done.name.encode()) == 254
    assert main([str(video), *INSTANT_MODEL, "--segment-seconds", "0.2", "--quiet"]) == 0
    assert probe(done).frame_count == probe(video).frame_count
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [picture.name, out.name, video.name, done.name])
    # Where the output's own name is too long (the input's and the suffix), before the model.
    capsys.readouterr()
    assert main([str(picture), *INSTANT_MODEL, "--quiet"]) == 2
    assert error_lines(capsys) == [
        f"upscale: error: {tmp_path / (stem + '_upscaled.png')}: the output's name would be 260 "
        "bytes, more than a file system takes (255); give a shorter one with -o or --suffix"]
    # Names no file system takes, typed: one line each, not a traceback.
    too_long = "q" * 256
    assert main([str(picture), "-o", str(tmp_path / too_long / "a.png"), "--quiet"]) == 2
    assert error_lines(capsys) == [
        f"upscale: error: {tmp_path / too_long / 'a.png'}: the output's folder "
        "qqqqqqqqqqqqqqqqqqqq...'s name would be 256 bytes, more than a file system takes "
        "(255); give a shorter one with -o"]
    assert main([str(tmp_path / f"{too_long}.png"), "--quiet"]) == 5
    assert error_lines(capsys) == [f"upscale: error: {tmp_path / too_long}.png: File name too long"]


@pytest.mark.skipif(os.name != "posix" or os.uname().sysname == "Darwin",
                    reason="APFS takes only UTF-8 names")
def test_names_that_are_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Linux names are bytes: a Latin-1 name from an old archive or a zip made on Windows
    (0xFF, 0xFE) is not UTF-8, and Python holds such bytes as surrogates, which str.encode
    refuses. Counting a name's bytes that way stopped a whole folder job with a traceback."""
    from conftest import INSTANT_MODEL

    src = tmp_path / "old"
    bad = os.fsdecode(b"caf\xe9 \xff\xfe.png")
    save(src / bad, draw_cel(12, 16))
    save(src / "ok.png", draw_cel(12, 16))
    assert main([str(src), "-o", str(tmp_path / "out") + os.sep, *FAST]) == 0
    assert files(tmp_path / "out") == sorted([bad, "ok.png"])
    with Image.open(tmp_path / "out" / bad) as done:
        assert done.size == (64, 48)
    # Beside its input, with a name long enough that the temporary file's is cut to fit.
    long_bad = os.fsdecode(b"\xff" * 230 + b".png")
    picture = save(tmp_path / long_bad, draw_cel(12, 16))
    assert main([str(picture), *INSTANT_MODEL, "--quiet"]) == 0
    assert (tmp_path / os.fsdecode(b"\xff" * 230 + b"_upscaled.png")).exists()
    capsys.readouterr()
    assert main([str(picture), *INSTANT_MODEL, "--quiet"]) == 0
    # Named in messages with the bytes as Python writes them, on one line.
    shown = "\\xff" * 230
    assert error_lines(capsys) == [f"upscale: {tmp_path}/{shown}_upscaled.png: exists, skipped "
                                   "(--overwrite redoes it)"]


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_linked_folders_are_followed_once(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A season kept on another disk and linked into the library folder was left out without
    a word, and a folder holding only such links was "empty". Links are followed now, but not
    round a loop, not twice to one folder, not to a folder inside the input (its pictures come
    by their own path) and never into the output folder."""
    from conftest import INSTANT_MODEL

    other = tmp_path / "disk2" / "season1"
    save(other / "01.png", draw_cel(12, 16))
    save(other / "extras" / "02.png", draw_cel(12, 16))
    lib = tmp_path / "lib"
    save(lib / "cover.png", draw_cel(12, 16))
    save(lib / "real" / "03.png", draw_cel(12, 16))
    (lib / "season1").symlink_to(other)
    (lib / "season1 again").symlink_to(other)  # the same folder twice
    (lib / "shortcut").symlink_to(lib / "real")  # inside the input
    (lib / "loop").symlink_to(lib)
    (other / "extras" / "up").symlink_to(other)  # a loop on the other disk
    out = tmp_path / "lib_upscaled"
    out.mkdir()
    (lib / "outputs").symlink_to(out)
    args = [str(lib), *INSTANT_MODEL, "--quiet"]
    assert main(args) == 0
    assert [p for p in files(out) if p.endswith(".png")] == [
        "cover.png", "real/03.png", "season1/01.png", "season1/extras/02.png"]
    assert error_lines(capsys) == ["upscale: 4 done, 0 skipped, 0 failed"]
    assert main(args) == 0  # the rerun does not take the outputs for inputs through the link
    assert error_lines(capsys) == [
        "upscale: 0 done, 4 skipped (outputs exist; --overwrite redoes them), 0 failed"]

    only_links = tmp_path / "library"
    only_links.mkdir()
    (only_links / "season1").symlink_to(other)
    assert main([str(only_links), *INSTANT_MODEL, "--quiet"]) == 0
    assert files(tmp_path / "library_upscaled") == [
        "season1", "season1/01.png", "season1/extras", "season1/extras/02.png"]
    # A link to a season and one to the disk that holds it: the season's pictures once.
    (only_links / "disk2").symlink_to(tmp_path / "disk2")
    assert main([str(only_links), "-o", str(tmp_path / "both"), *INSTANT_MODEL, "--quiet"]) == 0
    assert [p for p in files(tmp_path / "both") if p.endswith(".png")] == [
        "season1/01.png", "season1/extras/02.png"]
