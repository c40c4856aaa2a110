"""The public Python API: `upscaler.Upscaler` on pictures in memory, `upscaler.upscale_path`."""

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python
from draw import draw_cel
from PIL import Image

import upscaler
from upscaler.cli import main

MODEL = "realesr-animevideov3"
INSTANT = Path(__file__).resolve().parent / "data" / "nearest4x.onnx"


@pytest.fixture(scope="module")
def up() -> upscaler.Upscaler:
    with upscaler.Upscaler(model=MODEL) as instance:
        yield instance


def test_only_the_api_is_exported() -> None:
    assert sorted(upscaler.__all__) == ["Comparison", "Progress", "Upscaler", "UpscalerError",
                                        "__version__", "compare", "upscale_path"]


def test_rgb_matches_the_command_line(up: upscaler.Upscaler, tmp_path: Path) -> None:
    cel = draw_cel(20, 24)
    Image.fromarray(cel).save(tmp_path / "cel.png")
    assert main([str(tmp_path / "cel.png"), "--model", MODEL, "--quiet"]) == 0
    with Image.open(tmp_path / "cel_upscaled.png") as im:
        expected = np.asarray(im)
    out = up.upscale(Image.fromarray(cel))
    assert out.mode == "RGB" and out.size == (96, 80)
    assert np.array_equal(np.asarray(out), expected)
    assert np.array_equal(up.upscale(cel), expected)  # numpy in, numpy out


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "1", "P", "PA", "CMYK", "I;16",
                                  "I;16B", "I;16L", "I;16N", "I", "YCbCr", "LAB", "HSV", "RGBX",
                                  "RGBa", "La"])
def test_every_pil_mode_comes_back_in_its_mode(up: upscaler.Upscaler, mode: str) -> None:
    cel = draw_cel(12, 16)
    if mode.startswith("I;16"):
        order = {"I;16B": ">u2", "I;16N": "=u2"}.get(mode, "<u2")
        deep = cel[..., 1].astype(np.uint16) * 257
        picture = Image.frombytes(mode, (16, 12), deep.astype(order).tobytes())
    elif mode in ("La", "RGBa"):
        picture = Image.fromarray(cel).convert("RGBA").convert(mode)
    elif mode == "I":
        picture = Image.fromarray(cel[..., 1].astype(np.int32) * 257)
    else:
        picture = Image.fromarray(cel).convert(mode)
    picture.info["dpi"] = (300, 300)
    out = up.upscale(picture)
    assert out.mode == mode and out.size == (64, 48)
    assert out.info["dpi"] == (300, 300)
    values = np.asarray(out)
    if mode == "1":
        assert set(np.unique(values)) <= {False, True}
    if mode.startswith("I;16") or mode == "I":
        assert len(np.unique(values)) > 256  # deep values, not 8-bit ones scaled up
        assert values.max() > 255


def test_a_palette_picture_keeps_its_palette_and_transparent_index(
        up: upscaler.Upscaler) -> None:
    picture = Image.fromarray(draw_cel(12, 16)).convert("P", palette=Image.Palette.ADAPTIVE,
                                                        colors=16)
    indices = np.array(picture)
    indices[:4, :4] = 15
    picture = Image.fromarray(indices, "P")
    picture.putpalette(Image.fromarray(draw_cel(12, 16)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=16).getpalette())
    picture.info["transparency"] = 15
    out = up.upscale(picture)
    assert out.mode == "P" and out.info["transparency"] == 15
    assert out.getpalette()[:48] == picture.getpalette()[:48]
    assert (np.asarray(out)[:12, :12] == 15).all()  # the transparent corner stays transparent


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((12, 16), np.uint8), ((12, 16, 1), np.uint8), ((12, 16, 2), np.uint16),
     ((12, 16, 3), np.uint16), ((12, 16, 4), np.uint8)],
)
def test_arrays_keep_their_layout_and_dtype(up: upscaler.Upscaler, shape: tuple[int, ...],
                                            dtype: type) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    out = up.upscale(array)
    assert out.dtype == dtype and out.shape == (48, 64, *shape[2:])


@pytest.mark.parametrize(
    ("value", "needle"),
    [(np.zeros((4, 4, 3), np.float32), "uint8 or uint16"),
     (np.zeros((4, 4, 5), np.uint8), "(H, W) or (H, W, 1-4)"),
     ("cel.png", "expected a PIL image or a numpy array"),
     (Image.new("F", (4, 4)), "mode 'F' is not supported")],
)
def test_bad_pictures_raise_usage_errors(up: upscaler.Upscaler, value: object,
                                         needle: str) -> None:
    with pytest.raises(upscaler.UpscalerError) as info:
        up.upscale(value)  # type: ignore[call-overload]
    assert needle in str(info.value) and info.value.exit_code == 2


def test_bad_options_are_refused() -> None:
    with pytest.raises(upscaler.UpscalerError, match="unknown option"):
        upscaler.Upscaler(tiles=3)
    with pytest.raises(upscaler.UpscalerError, match="tile must be"):
        upscaler.Upscaler(tile=5)


def test_upscale_path_runs_a_job_like_the_command(tmp_path: Path) -> None:
    Image.fromarray(draw_cel(12, 16)).save(tmp_path / "a.png")
    done = upscaler.upscale_path(tmp_path / "a.png", f"{tmp_path / 'out'}/", model=MODEL,
                                 format="webp")
    assert (done.done, done.skipped) == (1, 0)
    with Image.open(tmp_path / "out" / "a.webp") as im:
        assert im.size == (64, 48)
    again = upscaler.upscale_path(tmp_path / "a.png", f"{tmp_path / 'out'}/", model=MODEL,
                                  format="webp")
    assert (again.done, again.skipped) == (0, 1)
    with pytest.raises(upscaler.UpscalerError, match="input does not exist"):
        upscaler.upscale_path(tmp_path / "missing.png")


def test_frames_take_what_pictures_take(up: upscaler.Upscaler) -> None:
    """upscale_frames refused big-endian uint16, which upscale takes (docs/api.md: "uint16 in
    either byte order"), and its float refusal was not the TypeError upscale raises."""
    frame = (draw_cel(12, 16).astype(np.uint16) * 257).astype(">u2")
    (got,) = up.upscale_frames([frame])
    assert got.dtype == np.dtype(">u2")
    np.testing.assert_array_equal(got, up.upscale(frame))
    with pytest.raises(TypeError, match="uint8 or uint16"):
        list(up.upscale_frames([frame.astype(np.float32)]))


def test_a_closed_upscaler_says_so() -> None:
    """It raised "RuntimeError: cannot schedule new futures after shutdown"."""
    closed = upscaler.Upscaler(model=MODEL)
    closed.close()
    picture = draw_cel(12, 16)
    for use in (lambda: closed.upscale(picture), lambda: list(closed.upscale_frames([picture])),
                closed.__enter__):
        with pytest.raises(upscaler.UpscalerError, match="this Upscaler is closed"):
            use()


def test_compare_takes_one_model_name_and_refuses_none(tmp_path: Path) -> None:
    """A name alone was split into letters ("r: unknown model"); an empty list ran the four
    default models, where the command refuses `--models ""`."""
    picture = tmp_path / "cel.png"
    Image.fromarray(draw_cel(12, 16)).save(picture)
    result = upscaler.compare(picture, models=MODEL, tile=0)
    assert [r.model for r in result.results] == [MODEL]
    with pytest.raises(upscaler.UpscalerError, match="names no model"):
        upscaler.compare(picture, models=[])


@pytest.mark.parametrize(("executor", "frames"), [("openvino", False), ("onnxruntime", False),
                                                ("openvino", True)])
def test_closing_an_upscaler_another_thread_is_using_waits_for_its_call(executor: str,
                                                                        frames: bool) -> None:
    """close() from another thread freed the executor's request under the call: OpenVINO's
    AttributeError ("'NoneType' object has no attribute 'infer'"), not an UpscalerError. A
    call of 700 small tiles (1 s here) is surely under way 0.3 s after it began."""
    busy = upscaler.Upscaler(model=str(INSTANT), tile=16, executor=executor)
    picture = np.zeros((420, 420, 3), np.uint8)
    busy.upscale(picture[:32, :32])  # loaded and warm
    seen: list[object] = []

    def work() -> None:
        try:
            if frames:  # each frame's model work too
                seen.extend(big.shape for big in busy.upscale_frames([picture, picture + 1]))
            seen.append(busy.upscale(picture).shape)
            busy.upscale(picture)
        except BaseException as e:  # what it ends with is what is tested
            seen.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(0.3)
    busy.close()  # waits for the call under way, which then ends whole
    thread.join(60)
    assert seen[0] == (1680, 1680, 3), seen
    assert isinstance(seen[1], upscaler.UpscalerError) and "closed" in str(seen[1]), seen


def test_api_arguments_of_the_wrong_kind_are_our_errors(tmp_path: Path) -> None:
    """They were Python's own TypeErrors, with no exit_code (or, for `progress`, at the first
    report); a numpy integer tile was refused ("must be an integer, not int64"), and one time
    given to compare as a string was split into its characters ("--at .: not a time")."""
    picture = tmp_path / "cel.png"
    Image.fromarray(draw_cel(12, 16)).save(picture)
    for call, needle in (
            (lambda: upscaler.upscale_path(5), "input must be a path"),
            (lambda: upscaler.upscale_path(picture, progress=5), "progress must be callable"),
            (lambda: upscaler.compare(picture, models=[5]), "each of models must be a path"),
            (lambda: upscaler.compare(picture, at=[object()]), "each of at must be")):
        with pytest.raises(upscaler.UpscalerError, match=needle) as info:
            call()
        assert info.value.exit_code == 2 and isinstance(info.value, TypeError)
    done = upscaler.upscale_path(os.fsencode(picture), tmp_path / "out.png",
                                 model=str(INSTANT), tile=np.int64(16))
    assert done.done == 1
    clip = Path(__file__).resolve().parents[1] / "samples" / "clip.mkv"
    for at in ("1.5", np.float32(1.5), [np.float64(1.5)]):
        found = upscaler.compare(clip, models=str(INSTANT), at=at)
        assert [f.label for f in found.frames] == ["0:01.460"]
    assert upscaler.Upscaler(model=str(INSTANT), reuse=np.False_).scale == 4


def test_what_the_callers_frames_raise_goes_on_as_it_is() -> None:
    """A MemoryError of the caller's own came out as our OutOfMemoryError, which an
    `except MemoryError` misses."""
    up = upscaler.Upscaler(model=str(INSTANT))

    def frames() -> Iterator[np.ndarray]:
        yield np.zeros((8, 8, 3), np.uint8)
        raise MemoryError("my own cache")

    with pytest.raises(MemoryError, match="my own cache") as info:
        list(up.upscale_frames(frames()))
    assert type(info.value) is MemoryError
    up.close()


def test_close_from_a_signal_handler_during_a_call_returns() -> None:
    """close() waited for every call under way, also the one its own thread was in (a signal
    handler's): it never returned."""
    script = (
        "import signal, numpy as np, upscaler\n"
        f"up = upscaler.Upscaler(model={str(INSTANT)!r}, tile=16)\n"
        "up.upscale(np.zeros((32, 32, 3), np.uint8))\n"
        "signal.signal(signal.SIGALRM, lambda *_: up.close())\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.3)\n"
        "try:\n"
        "    up.upscale(np.zeros((420, 420, 3), np.uint8))\n"
        "except upscaler.UpscalerError as e:\n"
        "    print('ended:', e)\n")
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ended: this Upscaler is closed"), done.stdout
