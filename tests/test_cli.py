import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import INSTANT_MODEL, psnr
from draw import draw_cel
from PIL import Image
from reference import ncnn_upscale

from upscaler import cli
from upscaler.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
FAST = ["--model", "realesr-animevideov3", "--quiet"]


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_untiled_onnx_image(tmp_path: Path) -> None:
    src = save(tmp_path / "a.png", draw_cel(24, 32))
    out = tmp_path / "a_x4.png"
    assert main([str(src), "-o", str(out), "--executor", "onnx", "--tile", "0", *FAST]) == 0
    assert load(out).shape == (96, 128, 3)


def test_folder_is_mirrored_and_existing_outputs_skipped(tmp_path: Path) -> None:
    src = tmp_path / "stills"
    save(src / "a.png", draw_cel(16, 16))
    save(src / "sub" / "b.jpg", draw_cel(16, 20, seed=1))
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), "--format", "png", *FAST]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a.png", "sub/b.png"]
    assert load(out / "sub" / "b.png").shape == (64, 80, 3)

    before = (out / "a.png").stat().st_mtime_ns
    (out / "sub" / "b.png").unlink()
    assert main([str(src), "-o", str(out), "--format", "png", *FAST]) == 0
    assert (out / "a.png").stat().st_mtime_ns == before  # skipped
    assert (out / "sub" / "b.png").exists()  # redone
    assert main([str(src), "-o", str(out), "--format", "png", "--overwrite", *FAST]) == 0
    assert (out / "a.png").stat().st_mtime_ns != before


def test_default_folder_output_is_beside_the_input(tmp_path: Path) -> None:
    src = tmp_path / "stills"
    save(src / "a.png", draw_cel(16, 16))
    assert main([str(src), *FAST]) == 0
    assert (tmp_path / "stills_upscaled" / "a.png").exists()


def test_an_output_folder_inside_the_input_folder_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "stills"
    save(src / "a.png", draw_cel(16, 16))
    assert main([str(src), "-o", str(src / "out"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must not be inside the input folder" in err[0]
    assert str(src / "out") in err[0]
    assert not (src / "out").exists()


def test_scale_option_resizes_after_the_model(tmp_path: Path) -> None:
    src = save(tmp_path / "a.png", draw_cel(20, 30))
    out = tmp_path / "b.png"
    assert main([str(src), "-o", str(out), "--scale", "2.5", *FAST]) == 0
    assert load(out).shape == (50, 75, 3)


def test_existing_output_is_skipped_not_overwritten(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = save(tmp_path / "a.png", draw_cel(16, 16))
    out = tmp_path / "b.png"
    out.write_bytes(b"precious")
    assert main([str(src), "-o", str(out), "--model", "realesr-animevideov3"]) == 0
    err = capsys.readouterr().err.strip()
    assert err == f"upscale: {out}: exists, skipped (--overwrite redoes it)"
    assert out.read_bytes() == b"precious"
    assert main([str(src), "-o", str(src), "--overwrite", *FAST]) == 2  # never the input
    assert "the output would overwrite the input" in capsys.readouterr().err


def test_the_input_reached_by_another_path_is_never_the_output(
        tmp_path: Path, bind_mount: Callable[[Path], Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The check compared paths: through a bind mount (a network share of a local folder is
    the same), `--overwrite` replaced the input picture, video or folder's pictures with their
    upscales. It compares the files too now (a hard link is refused alike)."""
    src = save(tmp_path / "in" / "a.png", draw_cel(16, 16))
    os.link(src, tmp_path / "in" / "linked.png")
    assert main([str(src), "-o", str(tmp_path / "in" / "linked.png"), "--overwrite",
                 *INSTANT_MODEL, "--quiet"]) == 2
    assert "the output would overwrite the input" in capsys.readouterr().err
    again = bind_mount(tmp_path / "in")
    before = src.read_bytes()
    assert main([str(src), "-o", str(again / "a.png"), "--overwrite", *INSTANT_MODEL,
                 "--quiet"]) == 2
    assert "the output would overwrite the input" in capsys.readouterr().err
    assert main([str(tmp_path / "in"), "-o", str(again / "out"), "--overwrite",
                 *INSTANT_MODEL, "--quiet"]) == 2
    assert "the output folder must not be inside the input folder" in capsys.readouterr().err
    assert src.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.png", "linked.png"]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["missing.png"], 5, "missing.png: input does not exist"),
        (["{bad}"], 5, "bad.png"),
        (["{img}", "--model", "nosuch"], 3, "unknown model"),
        (["{img}", "--executor", "quantum"], 2, "quantum"),
        (["{img}", "--tile", "5"], 2, "--tile must be 0 (no tiling) or at least 16"),
        (["{img}", "--segment-seconds", "0"], 2, "error: --segment-seconds must be > 0"),
        # Real-ESRGAN's own file names, waifu2x-ncnn-vulkan's folders, other programs' devices.
        (["{img}", "--model", "RealESRGAN_x4plus_anime_6B"], 3,
         "unknown model; did you mean realesrgan-x4plus-anime or realesrgan-x4plus? "),
        (["{img}", "--model", "models-cunet"], 3, "did you mean waifu2x-cunet-x2 or "),
        (["{img}", "--executor", "cuda"], 2,
         "(a device goes to --device: --executor onnxruntime --device cuda)"),
        # Not abbreviated: --overw would have overwritten an output unasked.
        (["{img}", "--overw"], 2, "unrecognized arguments: --overw (did you mean --overwrite?)"),
        (["{img}", "--qualty", "80"], 2, "--qualty 80 (did you mean --quality?); `upscale --help`"),
        (["{img}", "-x"], 2, "-x (the ncnn-vulkan programs' -x is --tta)"),
        # ffmpeg's users: its flags, and another name for an option.
        (["{img}", "-c:v", "libx265"], 2, "-c:v libx265 (ffmpeg's -c:v is --codec)"),
        (["{img}", "-b:v", "8M"], 2, "(ffmpeg's -b:v sets a bitrate; here --crf sets the quality)"),
        (["{img}", "--encoder=libx265"], 2, "--encoder=libx265 (did you mean --codec?)"),
        (["{img}", "-c:a", "aac"], 2, "(ffmpeg's -c:a has no match: the source's audio is copied"),
        ([], 2, "no input given"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         args: list[str], code: int, needle: str) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("this is not a PNG")
    img = save(tmp_path / "ok.png", draw_cel(16, 16))
    argv = [a.format(bad=bad, img=img) if "{" in a else str(tmp_path / a) if a.endswith(".png")
            else a for a in args]
    assert main([*argv, "--quiet"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("upscale: error: "), err
    assert needle in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "ok.png"]  # nothing written


def test_a_gpu_onnxruntime_lacks_says_which_package_has_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime runs on CUDA")
    img = save(tmp_path / "ok.png", draw_cel(16, 16))
    assert main([str(img), "--executor", "onnxruntime", "--device", "cuda", "--quiet"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "CUDAExecutionProvider is not available in this onnxruntime build (has " in err
    assert err.rstrip().endswith("); pip install onnxruntime-gpu in its place"), err


def test_config_runs_every_job(tmp_path: Path) -> None:
    save(tmp_path / "in" / "a.png", draw_cel(16, 16))
    save(tmp_path / "one.png", draw_cel(12, 12))
    job = tmp_path / "job.yaml"
    job.write_text("defaults: {model: realesr-animevideov3}\n"
                   "jobs:\n"
                   "  - {input: in/, output: out/, format: webp}\n"
                   "  - {input: one.png, output: out/one.png, scale: 2}\n")
    assert main(["--config", str(job), "--quiet"]) == 0
    assert load(tmp_path / "out" / "a.webp").shape == (64, 64, 3)
    assert load(tmp_path / "out" / "one.png").shape == (24, 24, 3)


def test_models_lists_registry_and_built_files(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    src = save(tmp_path / "a.png", draw_cel(16, 16))
    assert main([str(src), "--executor", "onnxruntime", *FAST]) == 0
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("realesrgan-x4plus-anime (default for images)",
                 "realesr-animevideov3 (default for videos)", "realesr-animevideov3-x2",
                 "realesrgan-x4plus"):
        assert name in out
    assert "built:" in out and ".onnx" in out
    # The receptive field derived from each graph, and the margins of dirty regions.
    assert ("receptive field: 18 px; dirty regions grow 12 px around a change and run with "
            "12 px of context") in out
    assert "receptive field: 93.25 px;" in out


def test_models_lists_built_files_only_under_their_own_model(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose name starts another's (realesr-animevideov3, realesr-animevideov3-x2)."""
    monkeypatch.setenv("UPSCALER_CACHE_DIR", str(tmp_path / "cache"))
    src = save(tmp_path / "a.png", draw_cel(16, 16))
    assert main([str(src), "--executor", "onnxruntime", "--quiet",
                 "--model", "realesr-animevideov3-x2"]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    built: dict[str, list[str]] = {}
    for line in capsys.readouterr().out.splitlines():
        if line and not line.startswith(" ") and not line.startswith("built models"):
            model = line.split()[0]
            built[model] = []
        elif line.strip().startswith("built:"):
            built[model].append(Path(line.split(":", 1)[1].strip()).name)
    assert len(built["realesr-animevideov3-x2"]) == 1
    assert built["realesr-animevideov3-x2"][0].startswith("realesr-animevideov3-x2-fp32-dyn-")
    assert built["realesr-animevideov3"] == []
    # Only the whole flag clears the cache: argparse took --clear for --clear-cache.
    assert main(["models", "--clear"]) == 2
    assert "takes only --clear-cache, not --clear" in capsys.readouterr().err
    assert any((tmp_path / "cache").glob("*.onnx"))
    assert main(["models", "--clear-cache"]) == 0
    assert not any((tmp_path / "cache").glob("*.onnx"))


@pytest.mark.skipif(shutil.which("upscale") is None, reason="package not installed")
def test_console_script(tmp_path: Path) -> None:
    src = save(tmp_path / "a.png", draw_cel(16, 16))
    env = {**os.environ, "UPSCALER_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([str(shutil.which("upscale")), str(src), *FAST],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert load(tmp_path / "a_upscaled.png").shape == (64, 64, 3)


def test_names_after_double_dash_are_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`upscale -- -x.png`, as with any command: argparse's intermixed parsing refused it
    ("unrecognized arguments") before Python 3.12."""
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "-x.png", draw_cel(12, 16))
    save(tmp_path / "b.png", draw_cel(12, 16))
    assert main([*FAST, "--", "-x.png"]) == 0
    assert load(tmp_path / "-x_upscaled.png").shape == (48, 64, 3)
    assert main(["-o", "out/", *FAST, "--", "-x.png", "b.png"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["-x.png", "b.png"]
    capsys.readouterr()
    assert main([*FAST, "-x.png"]) == 2  # without it, an option
    assert "unrecognized arguments: -x.png" in capsys.readouterr().err


def test_devices_as_users_spell_them(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`--device cpu` for OpenVINO (which names it CPU) and `CPU` for PyTorch were refused; a
    device type PyTorch names but this build lacks (vulkan, xpu) gave a traceback, exit 1."""
    from upscaler.executors.registry import unavailable_reason

    src = save(tmp_path / "a.png", draw_cel(12, 16))
    runs = [("openvino", "cpu"), ("torch", "CPU")]
    for executor, device in runs:
        if unavailable_reason(executor) is not None:
            continue
        out = tmp_path / f"{executor}.png"
        assert main([str(src), "-o", str(out), *FAST, "--executor", executor,
                     "--device", device]) == 0, capsys.readouterr().err
        assert load(out).shape == (48, 64, 3)
    if unavailable_reason("torch") is None:
        capsys.readouterr()
        assert main([str(src), "-o", str(tmp_path / "v.png"), *FAST, "--executor", "torch",
                     "--device", "vulkan:0"]) == 4
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("upscale: error: torch: device 'vulkan:0' is not available here (")
        assert line.endswith("); use cuda[:N], mps or cpu") and len(line) < 300


def conv_model(path: Path, in_shape: list, out_channels: int = 3) -> Path:
    """A user's ONNX model: a nearest 2x Resize, then a 1x1 convolution to `out_channels`
    (the identity on the first channels)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    in_channels = in_shape[1]
    weights = np.eye(out_channels, in_channels, dtype=np.float32)[:, :, None, None]
    out_shape = [1, out_channels, *(d * 2 if isinstance(d, int) else f"{d}2"
                                    for d in in_shape[2:])]
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="nearest"),
         helper.make_node("Conv", ["r", "w"], ["y"])], path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
                     numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _odd_model(path: Path, kind: str) -> Path:
    """A user's ONNX file no executor can run on a picture: empty, of no input, of an integer
    input, of two inputs, scaling its two sides differently."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if kind == "empty":
        path.write_bytes(b"")
        return path
    shape = [1, 3, "h", "w"]
    image = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    if kind == "no input":
        nodes = [helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(
            np.zeros((1, 3, 4, 4), np.float32)))]
        inputs = []
    elif kind == "integer input":
        nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)]
        inputs = [helper.make_tensor_value_info("x", TensorProto.INT64, shape)]
    elif kind == "uneven scale":  # 2x down, 4x across
        nodes = [helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(
                     np.array([1, 1, 2, 4], np.float32))),
                 helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    else:
        nodes = [helper.make_node("Add", ["x", "b"], ["y"])]
        inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
                  for name in ("x", "b")]
    graph = helper.make_graph(nodes, path.stem, inputs, [image])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("executor", ["onnxruntime", "openvino"])
def test_a_model_fixed_to_small_tiles_runs(tmp_path: Path, executor: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A user's ONNX fixed to 16x16 was refused, "tile size 16 must be larger than the overlap
    20", whatever --overlap said: its tiles overlap by half a tile now, as a --tile that small
    does."""
    model = conv_model(tmp_path / "fixed16.onnx", [1, 3, 16, 16])
    for size, extra in (((10, 12), []), ((24, 32), []), ((24, 32), ["--overlap", "0"])):
        pixels = draw_cel(*size)
        src = save(tmp_path / "a.png", pixels)
        out = tmp_path / "out.png"
        assert main([str(src), "-o", str(out), "--model", str(model), "--executor", executor,
                     "--quiet", "--overwrite", *extra]) == 0, capsys.readouterr().err
        np.testing.assert_array_equal(load(out), pixels.repeat(2, 0).repeat(2, 1))


@pytest.mark.parametrize("executor", ["onnxruntime", "openvino"])
def test_onnx_files_no_executor_can_run_are_refused_alike(
        tmp_path: Path, executor: str, capsys: pytest.CaptureFixture[str]) -> None:
    """OpenVINO gave a traceback for an empty file or one of no input, and ran an integer
    input, writing a picture of 0 and 255 alone (exit 0); ONNX Runtime failed a model of two
    inputs at its first frame (exit 4). Each is refused before any work now, exit 3."""
    src = save(tmp_path / "a.png", draw_cel(12, 16))
    for kind, needle in (("empty", ": "), ("no input", "expected one NCHW image input"),
                         ("integer input", "expected float"),
                         ("two inputs", "expected one NCHW image input"),
                         # (It said "not an integer multiple", which both sides were.)
                         ("uneven scale", "scales the height 2x and the width 4x")):
        model = _odd_model(tmp_path / f"{kind.replace(' ', '_')}.onnx", kind)
        code = main([str(src), "-o", str(tmp_path / "out.png"), "--model", str(model),
                     "--executor", executor, "--quiet"])
        err = capsys.readouterr().err
        assert code == 3 and needle in err and "Traceback" not in err, (kind, err)
        assert len(err.strip().splitlines()) == 1 and str(model) in err, err
        assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("executor", ["onnxruntime", "openvino"])
def test_a_users_onnx_model_is_checked_alike_on_every_executor(
        tmp_path: Path, executor: str, capsys: pytest.CaptureFixture[str]) -> None:
    """OpenVINO ran a model with a fourth output channel and dropped it without a word, where
    ONNX Runtime failed mid-run (exit 4); it failed on a fixed input size, which ONNX Runtime
    tiles to. Each now takes the fixed size and refuses what does not map RGB to RGB before
    any work, naming the file (exit 3)."""
    from upscaler.executors.registry import unavailable_reason

    if unavailable_reason(executor) is not None:
        pytest.skip(f"{executor} is not installed")
    src = save(tmp_path / "a.png", draw_cel(72, 100))  # two tiles by two of the fixed size
    run = ["--executor", executor, "--quiet"]
    plain = conv_model(tmp_path / "plain.onnx", [1, 3, "h", "w"])
    fixed = conv_model(tmp_path / "fixed.onnx", [1, 3, 64, 64])
    assert main([str(src), "-o", str(tmp_path / "plain.png"), "--model", str(plain), *run]) == 0
    assert main([str(src), "-o", str(tmp_path / "fixed.png"), "--model", str(fixed), *run]) == 0
    want = load(tmp_path / "plain.png")
    assert want.shape == (144, 200, 3)
    np.testing.assert_array_equal(load(tmp_path / "fixed.png"), want)
    for model, said in [(conv_model(tmp_path / "gray.onnx", [1, 1, "h", "w"], 1),
                         "model takes 1 channels, expected 3 (RGB)"),
                        (conv_model(tmp_path / "rgba.onnx", [1, 3, "h", "w"], 4),
                         "model gives 4 channels, expected 3 (RGB)")]:
        capsys.readouterr()
        assert main([str(src), "-o", str(tmp_path / "x.png"), "--model", str(model), *run]) == 3
        assert capsys.readouterr().err == f"upscale: error: {model}: {said}\n"
        assert not (tmp_path / "x.png").exists()


def drawn_alpha(height: int, width: int, scale: int) -> np.ndarray:
    """An anti-aliased figure's alpha (an ellipse and a bar) at `scale` times the size, drawn 4x
    finer still and averaged down, so every size is the same figure sampled exactly."""
    import cv2

    fine = np.zeros((height * 16, width * 16), np.uint8)
    cv2.ellipse(fine, (width * 8, height * 8), (width * 5, height * 5), 20, 0, 360, 255, -1)
    cv2.rectangle(fine, (width * 2, height * 2), (width * 5, height * 13), 255, -1)
    return cv2.resize(fine, (width * scale, height * scale), interpolation=cv2.INTER_AREA)


def test_alpha_16_bit_gray_and_palette_survive_the_pipeline(tmp_path: Path) -> None:
    import cv2

    rgb = draw_cel(32, 48)
    alpha = drawn_alpha(32, 48, 1)  # an anti-aliased figure on a transparent background
    rgba = save(tmp_path / "rgba.png", np.dstack([rgb, alpha]))
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), (rgb.astype(np.uint16) * 257)[..., ::-1])
    gray = save(tmp_path / "gray.png", rgb.mean(axis=2).astype(np.uint8))
    palette = tmp_path / "palette.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(palette)
    for src in (rgba, deep, gray, palette):
        assert main([str(src), *FAST]) == 0, src

    out = load(tmp_path / "rgba_upscaled.png")
    assert out.shape == (128, 192, 4)
    # Against the figure drawn at the output size: more than 4 source pixels from its edges
    # exactly opaque inside and transparent outside; within 1 pixel of them the model's alpha is
    # much closer than repeating pixels (measured 22.6 dB against 15.7; bicubic gives 16.5).
    truth = drawn_alpha(32, 48, 4).astype(np.float64)
    square = np.ones((3, 3), np.uint8)
    edge = (cv2.dilate(truth, square) != cv2.erode(truth, square)).astype(np.uint8)
    far = cv2.dilate(edge, np.ones((33, 33), np.uint8)) == 0
    assert (out[..., 3][far & (truth == 255)] == 255).all()
    assert (out[..., 3][far & (truth == 0)] == 0).all()
    near = cv2.dilate(edge, np.ones((9, 9), np.uint8)) > 0
    nearest = cv2.resize(alpha, (192, 128), interpolation=cv2.INTER_NEAREST)
    ours = psnr(out[..., 3][near], truth[near], 255)
    assert ours >= 20 and ours >= psnr(nearest[near], truth[near], 255) + 5
    deep_out = cv2.imread(str(tmp_path / "deep_upscaled.png"), cv2.IMREAD_UNCHANGED)
    assert deep_out.dtype == np.uint16 and deep_out.shape == (128, 192, 3)
    assert len(np.unique(deep_out)) > 256  # real 16-bit values, not 8-bit ones scaled up
    assert load(tmp_path / "gray_upscaled.png").shape == (128, 192)
    assert load(tmp_path / "palette_upscaled.png").shape == (128, 192, 3)


def test_video_job_keeps_frames_rate_and_audio(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from clips import make_clip

    from upscaler.media.video.probe import probe

    src = make_clip(tmp_path / "ep.mkv", size="32x18", seconds=0.5, audio=True)
    out = tmp_path / "ep_x4.mkv"
    assert main([str(src), "-o", str(out), "--model", "realesr-animevideov3"]) == 0
    # The stage report: what each stage spent working, and the one that bounds the job.
    report = re.search(r"ep\.mkv: busy: decode ([\d.]+) s, model ([\d.]+) s, encode ([\d.]+) s; "
                       r"(decoding|the model|encoding) set the pace", capsys.readouterr().err)
    assert report is not None
    busy = [float(report.group(i)) for i in (1, 2, 3)]
    assert busy[("decoding", "the model", "encoding").index(report.group(4))] == max(busy)
    before, after = probe(src), probe(out)
    assert (after.width, after.height) == (128, 72)
    assert after.frame_count == before.frame_count
    assert after.frame_rate == before.frame_rate
    assert [s.kind for s in after.streams] == [s.kind for s in before.streams]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no work dir left


@pytest.mark.slow
def test_video_frames_are_the_models_output(tmp_path: Path) -> None:
    """A real model's video, encoded losslessly as RGB, holds exactly what Tencent's ncnn makes
    of each decoded source frame (padded as images are). Measured: identical, every frame."""
    from clips import decode_all, make_clip

    from upscaler.borders import crop_frame, pad_frame
    from upscaler.models.registry import resolve_model

    src = make_clip(tmp_path / "ep.mkv", size="32x18", seconds=0.3, audio=True)
    out = tmp_path / "ep_x4.mkv"
    # ncnn named: the claim is ncnn's frames exactly (on macOS `auto` would pick Core ML).
    assert main([str(src), "-o", str(out), *FAST, "--executor", "ncnn", "--codec", "libx264rgb",
                 "--pix-fmt", "rgb24", "--crf", "0"]) == 0
    frames, sources = decode_all(out), decode_all(src)
    assert len(frames) == len(sources) == 8
    border = resolve_model("realesr-animevideov3").border
    for k, (frame, source) in enumerate(zip(frames, sources, strict=True)):
        expected = crop_frame(ncnn_upscale("realesr-animevideov3", pad_frame(source, border)),
                              border * 4)
        assert psnr(frame, expected, 255) >= 85, f"frame {k}"


def test_a_bad_image_in_a_folder_fails_alone(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "stills"
    save(src / "a.png", draw_cel(16, 16))
    (src / "b.png").write_text("not a png")
    save(src / "c.png", draw_cel(16, 16, seed=2))
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out), *FAST]) == 5
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"upscale: error: {src / 'b.png'}: ")
    assert err[1] == "upscale: 2 done, 0 skipped, 1 failed"


def test_users_own_model_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    from upscaler.models.builds import onnx_file
    from upscaler.models.registry import resolve_model

    x2 = resolve_model("realesr-animevideov3-x2")
    param = Path(shutil.copy(x2.path, tmp_path / "mine.param"))
    shutil.copy(x2.bin_path, tmp_path / "mine.bin")
    own_onnx = tmp_path / "mine.onnx"
    onnx.save_model(onnx.load(onnx_file(x2)), own_onnx)
    src = save(tmp_path / "a.png", draw_cel(16, 20))
    for model, executor in ((param, "auto"), (own_onnx, "onnxruntime")):
        out = tmp_path / f"out-{model.suffix[1:]}.png"
        args = [str(src), "-o", str(out), "--model", str(model), "--executor", executor]
        assert main([*args, "--quiet"]) == 0
        assert load(out).shape == (32, 40, 3)  # the scale is read from the file

    (tmp_path / "mine.bin").write_bytes(x2.bin_path.read_bytes()[:1000])
    out = tmp_path / "never.png"
    assert main([str(src), "-o", str(out), "--model", str(param), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"upscale: error: {tmp_path / 'mine.bin'}: truncated"), err
    assert not out.exists()


def test_a_small_frame_runs_whole_by_default(tmp_path: Path) -> None:
    # 24x272 is wider than the 256-px tiles of earlier versions, far within the memory budget.
    src = save(tmp_path / "wide.png", draw_cel(24, 272))
    assert main([str(src), "-o", str(tmp_path / "default.png"), "--quiet"]) == 0
    assert main([str(src), "-o", str(tmp_path / "whole.png"), "--tile", "0", "--quiet",
                 "--model", "realesrgan-x4plus-anime"]) == 0
    assert main([str(src), "-o", str(tmp_path / "tiled.png"), "--tile", "160", "--quiet"]) == 0
    default, whole = load(tmp_path / "default.png"), load(tmp_path / "whole.png")
    # The same bytes as whole frames with the image model: one tile, and x4plus-anime.
    np.testing.assert_array_equal(default, whole)
    tiled = load(tmp_path / "tiled.png")
    assert not np.array_equal(tiled, whole) and psnr(tiled, whole, 255) > 40


@pytest.mark.slow
def test_video_default_model_is_animevideov3_and_model_overrides_it(tmp_path: Path) -> None:
    from clips import decode_all, make_clip

    src = make_clip(tmp_path / "ep.mkv", size="32x18", seconds=0.2)
    runs = {
        "default": [],
        "animevideov3": ["--model", "realesr-animevideov3"],
        "x4plus": ["--model", "realesrgan-x4plus-anime"],
    }
    frames = {}
    for name, args in runs.items():
        out = tmp_path / f"{name}.mkv"
        assert main([str(src), "-o", str(out), "--quiet", *args]) == 0
        frames[name] = decode_all(out)
    assert len(frames["default"]) == 5
    for a, b in zip(frames["default"], frames["animevideov3"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(frames["default"], frames["x4plus"],
                                                        strict=True))

    # The same through a job file: `model:` under defaults, and per job over the defaults.
    job = tmp_path / "job.yaml"
    job.write_text("defaults: {model: realesrgan-x4plus-anime}\n"
                   "jobs:\n"
                   "  - {input: ep.mkv, output: yaml-default.mkv}\n"
                   "  - {input: ep.mkv, output: yaml-job.mkv, model: realesr-animevideov3}\n")
    assert main(["--config", str(job), "--quiet"]) == 0
    for name, expected in (("yaml-default", "x4plus"), ("yaml-job", "animevideov3")):
        for a, b in zip(decode_all(tmp_path / f"{name}.mkv"), frames[expected], strict=True):
            np.testing.assert_array_equal(a, b)


def test_image_default_model_is_x4plus_anime_and_model_overrides_it(tmp_path: Path) -> None:
    src = save(tmp_path / "a.png", draw_cel(24, 32))
    outs = {}
    for name, args in (("default", []), ("x4plus", ["--model", "realesrgan-x4plus-anime"]),
                       ("animevideov3", ["--model", "realesr-animevideov3"])):
        assert main([str(src), "-o", str(tmp_path / f"{name}.png"), "--quiet", *args]) == 0
        outs[name] = load(tmp_path / f"{name}.png")
    np.testing.assert_array_equal(outs["default"], outs["x4plus"])
    assert not np.array_equal(outs["default"], outs["animevideov3"])
    job = tmp_path / "job.yaml"
    job.write_text("defaults: {model: realesr-animevideov3}\n"
                   "jobs: [{input: a.png, output: yaml.png}]\n")
    assert main(["--config", str(job), "--quiet"]) == 0
    np.testing.assert_array_equal(load(tmp_path / "yaml.png"), outs["animevideov3"])


def test_a_folder_named_like_a_subcommand_is_given_as_a_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "models" / "a.png", draw_cel(16, 16))
    assert main(["models"]) == 0
    assert "realesrgan-x4plus-anime (default for images)" in capsys.readouterr().out
    assert not (tmp_path / "models_upscaled").exists()
    assert main(["./models", *FAST]) == 0
    assert (tmp_path / "models_upscaled" / "a.png").exists()


def test_a_bar_into_a_log_file_is_redrawn_twice_a_minute(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """stderr that is not a terminal (a log file, a pipe; here pytest's capture): every tenth
    of a second of a long job was a line of the log. Now the bar starts, ends, and is redrawn
    twice a minute between."""
    from clips import make_clip

    src = make_clip(tmp_path / "ep.mkv", size="64x36", seconds=2.0)
    assert main([str(src), "-o", str(tmp_path / "out.mkv"), "--model",
                 "realesr-animevideov3"]) == 0
    draws = [part for part in re.split(r"[\r\n]", capsys.readouterr().err) if "frame" in part
             and "%|" in part]
    assert len(draws) <= 3 and draws[-1].startswith("ep.mkv: 100%|"), draws


def test_a_large_picture_moves_its_bar_before_it_ends(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A still that takes minutes (a scan through x4plus-anime on a CPU) showed a bar at 0 until
    its last tile: the bar now moves with its tiles, through its colours and its alpha, and
    counts the picture done only once it is. A folder's bar moves the same way, never back."""
    monkeypatch.setattr(cli, "LOGGED_INTERVAL", 0.0)  # every update drawn
    rgba = np.dstack([draw_cel(96, 128, seed=4), np.tile(np.linspace(0, 255, 128,
                                                                     dtype=np.uint8), (96, 1))])
    save(tmp_path / "in" / "scan.png", rgba)
    save(tmp_path / "in" / "cel.png", draw_cel(96, 128, seed=5))

    def draws(unit_total: str) -> list[tuple[int, str]]:
        bars = re.findall(r"(\d+)%\|[^|]*\| (\d+/\d+) ", capsys.readouterr().err)
        assert all(count.endswith(unit_total) for _, count in bars), bars
        return [(int(percent), count) for percent, count in bars]

    assert main([str(tmp_path / "in" / "scan.png"), "-o", str(tmp_path / "scan.png"),
                 "--tile", "32", *INSTANT_MODEL]) == 0
    seen = draws("/1")
    percents = [p for p, _ in seen]
    assert percents == sorted(percents) and percents[0] == 0 and percents[-1] == 100, seen
    assert len({p for p in percents if 0 < p < 50}) >= 3  # the colours' tiles
    assert len({p for p in percents if 50 < p < 100}) >= 3  # the alpha's
    assert all(count == "0/1" for p, count in seen if p < 100), seen

    assert main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--tile", "32",
                 *INSTANT_MODEL]) == 0
    seen = draws("/2")
    percents = [p for p, _ in seen]
    assert percents == sorted(percents) and percents[-1] == 100, seen
    assert len({p for p in percents if 0 < p < 50}) >= 3
    assert len({p for p in percents if 50 < p < 100}) >= 3


def test_a_video_frame_of_many_tiles_moves_the_bar_before_it_ends(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4K frame through x4plus-anime on a CPU takes minutes: the bar stood at 0 frames, with
    no time left to show, until the first had gone through; it moves with the frame's tiles."""
    from clips import make_clip

    monkeypatch.setattr(cli, "LOGGED_INTERVAL", 0.0)  # every update drawn
    src = make_clip(tmp_path / "ep.mkv", size="64x36", seconds=0.1)  # 3 frames
    assert main([str(src), "-o", str(tmp_path / "out.mkv"), "--tile", "24",
                 *INSTANT_MODEL]) == 0
    draws = [(int(percent), int(done)) for percent, done in re.findall(
        r"ep\.mkv: +(\d+)%\|[^|]*\| (\d+)/3 ", capsys.readouterr().err)]
    assert draws == sorted(draws) and draws[-1] == (100, 3), draws
    assert [p for p, done in draws if done == 0 and 0 < p < 33], draws  # the first frame's tiles


def test_real_cugans_exact_tiles_move_the_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Real-CUGAN and waifu2x tile a large picture exactly, in one call that reported only its
    end; the bar moves with each of its tile runs too."""
    monkeypatch.setattr(cli, "LOGGED_INTERVAL", 0.0)  # every update drawn
    save(tmp_path / "cel.png", draw_cel(64, 80, seed=6))
    assert main([str(tmp_path / "cel.png"), "-o", str(tmp_path / "out.png"), "--model",
                 "realcugan-x2-conservative", "--tile", "32", "--executor", "ncnn"]) == 0
    percents = [int(p) for p in re.findall(r"cel\.png: +(\d+)%\|", capsys.readouterr().err)]
    assert percents == sorted(percents) and percents[-1] == 100, percents
    assert len({p for p in percents if 0 < p < 100}) >= 3, percents
