"""ONNX builds checked against Tencent's ncnn on the original files; bad model files; the cache."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import psnr
from draw import draw_cel
from reference import ncnn_run

from upscaler.errors import ModelError
from upscaler.executors.base import ExecutorOptions
from upscaler.executors.ncnn import NcnnExecutor
from upscaler.executors.onnxruntime import OnnxRuntimeExecutor
from upscaler.executors.openvino import OpenVinoExecutor
from upscaler.models.builds import onnx_file
from upscaler.models.cache import CACHE_ENV, BuildKey, built_path
from upscaler.models.registry import MODELS, ModelRef, resolve_model

FAST = "realesr-animevideov3"
# Real-CUGAN and waifu2x take their own processing around the network: test_families.py.
REALESRGAN = [name for name, spec in MODELS.items() if spec.processing is None]
# Input side per model: the RRDB models are slow on 2 cores, so they get tiny tiles.
TILE_SIDE = {"realesrgan-x4plus": 16, "realesrgan-x4plus-anime": 24}


def run_ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x[None]})
    return out[0]


def model_inputs(name: str) -> list[np.ndarray]:
    side = TILE_SIDE.get(name, 40)
    noise = np.random.default_rng(1).random((3, side, side + 4), dtype=np.float32)
    cel = draw_cel(side + 8, side + 12, seed=3).transpose(2, 0, 1).astype(np.float32) / 255
    return [noise, np.ascontiguousarray(cel)]


# The RRDB models take 1-3 s each here (building them, then running ONNX Runtime and ncnn).
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in TILE_SIDE else n
                                  for n in sorted(REALESRGAN)])
def test_onnx_build_matches_ncnn(name: str) -> None:
    model = resolve_model(name)
    path = onnx_file(model, "fp32")
    for x in model_inputs(name):
        expected = ncnn_run(model, x)
        got = run_ort(path, x)
        assert got.shape == (3, x.shape[1] * model.scale, x.shape[2] * model.scale)
        assert expected.shape == got.shape
        assert psnr(got, expected) > 120  # README: "> 120 dB"; measured 120.9-132.9 dB


def test_fp16_build_is_valid_fp16() -> None:
    path = onnx_file(resolve_model(FAST), "fp16")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    dtypes = {i.data_type for i in proto.graph.initializer if i.name in conv_weights}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_x4plus_anime_parameter_count() -> None:
    model = resolve_model("realesrgan-x4plus-anime")
    assert model.graph().parameter_count() == 4_467_779
    proto = onnx.load(onnx_file(model, "fp32"))
    sizes = {i.name: int(np.prod(i.dims)) for i in proto.graph.initializer}
    weighted = {"Conv": (1, 2), "PRelu": (1,)}
    params = sum(sizes[n.input[k]] for n in proto.graph.node
                 for k in weighted.get(n.op_type, ()) if k < len(n.input))
    assert params == 4_467_779


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """The fast model's .param/.bin copied where a test may damage them."""
    src = resolve_model(FAST)
    param = tmp_path / "copy.param"
    shutil.copyfile(src.path, param)
    shutil.copyfile(src.bin_path, param.with_suffix(".bin"))
    return param


def _damage(param: Path, how: str) -> Path:
    """Damage the copy in one way; return the file the error should name."""
    bin_path = param.with_suffix(".bin")
    data = bin_path.read_bytes()
    if how == "truncated bin":
        bin_path.write_bytes(data[: len(data) // 2])
        return bin_path
    if how == "corrupt bin":
        bin_path.write_bytes(data + b"\0" * 4096)
        return bin_path
    lines = param.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("Convolution"))
    lines[index] = lines[index].replace("Convolution", "NoSuchLayer", 1)
    param.write_text("\n".join(lines) + "\n")
    return param


@pytest.mark.parametrize("how", ["truncated bin", "corrupt bin", "unknown layer"])
def test_bad_ncnn_files_name_the_file(model_copy: Path, how: str) -> None:
    culprit = _damage(model_copy, how)
    with pytest.raises(ModelError) as info:
        resolve_model(model_copy)
    assert culprit.name in str(info.value)
    # A ModelRef made without resolve_model's checks fails as clearly when it is built.
    unchecked = ModelRef("copy", "ncnn", model_copy, 4)
    with pytest.raises(ModelError) as info:
        onnx_file(unchecked)
    assert culprit.name in str(info.value)


@pytest.mark.parametrize("how", ["truncated bin", "unknown layer"])
def test_ncnn_executor_rejects_bad_files(model_copy: Path, how: str) -> None:
    culprit = _damage(model_copy, how)
    with pytest.raises(ModelError) as info:
        NcnnExecutor(ModelRef("copy", "ncnn", model_copy, 4), ExecutorOptions(threads=1))
    assert culprit.name in str(info.value)


@pytest.mark.parametrize("executor", [OnnxRuntimeExecutor, OpenVinoExecutor])
def test_non_model_onnx_names_the_file(tmp_path: Path, executor: type) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("these are not the weights you are looking for\n")
    with pytest.raises(ModelError) as info:
        executor(resolve_model(path), ExecutorOptions(threads=1))
    assert "notes.onnx" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    return cache


def test_cache_hit_does_not_rebuild(fresh_cache: Path) -> None:
    model = resolve_model(FAST)
    first = onnx_file(model, "fp32")
    stamp = first.stat().st_mtime_ns
    second = onnx_file(model, "fp32")
    assert second == first
    assert second.stat().st_mtime_ns == stamp
    assert first.parent == fresh_cache


def test_partial_entry_is_not_returned(fresh_cache: Path) -> None:
    model = resolve_model(FAST)
    final = built_path(BuildKey(model, "onnx", "fp32"))
    # What a build killed half way leaves: its temporary folder with a cut-off file.
    leftover = fresh_cache / f".{final.name}.killed" / final.name
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\x08\x07partial")
    path = onnx_file(model, "fp32")
    assert path == final
    onnx.checker.check_model(onnx.load(path))


@pytest.mark.parametrize("damage", ["truncated", "emptied"])
def test_a_cached_build_damaged_since_is_built_again(fresh_cache: Path, damage: str) -> None:
    """A cached ONNX cut short or emptied (a disk that lost its end, a hand) failed every run
    that loaded it ("Protobuf parsing failed", exit 3; OpenVINO: a traceback) until the cache
    was cleared by hand."""
    model = resolve_model(FAST)
    built = onnx_file(model, "fp32")
    size = built.stat().st_size
    with open(built, "r+b") as f:
        f.truncate(size // 2 if damage == "truncated" else 0)
    again = onnx_file(model, "fp32")
    assert again == built and again.stat().st_size == size
    ort.InferenceSession(str(again), providers=["CPUExecutionProvider"])


def _build_in_child(cache: str) -> str:
    os.environ[CACHE_ENV] = cache
    return str(onnx_file(resolve_model("realesr-animevideov3-x2"), "fp32"))


def test_concurrent_builds_both_succeed(fresh_cache: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_build_in_child, [str(fresh_cache)] * 2)
    assert paths[0] == paths[1]
    onnx.checker.check_model(onnx.load(paths[0]), full_check=True)
    ort.InferenceSession(paths[0], providers=["CPUExecutionProvider"])
    # (Beside it, hidden, the size it was built at.)
    assert [p.name for p in fresh_cache.iterdir() if not p.name.startswith(".")] == [
        Path(paths[0]).name]


def test_a_build_removes_what_earlier_versions_built_for_it(fresh_cache: Path) -> None:
    """Each version builds anew (its version is in the key): the same model's builds of the
    versions before go when it does; other keys' stay, whatever their version."""
    from PIL import Image

    from upscaler.cli import main
    from upscaler.version import __version__

    src = fresh_cache.parent / "a.png"
    Image.fromarray(draw_cel(16, 16)).save(src)
    run = [str(src), "-o", str(fresh_cache.parent / "b.png"), "--model", "realesr-animevideov3",
           "--executor", "onnxruntime", "--overwrite", "--quiet"]
    assert main(run) == 0
    (built,) = [p for p in fresh_cache.iterdir() if p.suffix == ".onnx"]
    mine = f"-v{__version__}.onnx"
    assert built.name.endswith(mine)

    def as_version(path: Path, version: str, precision: str = "fp32") -> Path:
        name = path.name.replace(mine, f"-v{version}.onnx").replace("-fp32-", f"-{precision}-")
        return path.with_name(name)

    earlier = [as_version(built, v) for v in ("0.1.0", "0.2.9", "0.2.10rc1")]
    others = [as_version(built, "0.2.9", "fp16"),  # another precision
              built.with_name(built.name.replace("realesr-animevideov3-",
                                                 "realesr-animevideov3-x2-"))]
    for path in (*earlier, *others):
        shutil.copy(built, path)
    built.unlink()  # as after an upgrade: this version has not built it yet
    assert main(run) == 0
    assert sorted(p.name for p in fresh_cache.iterdir() if p.suffix == ".onnx") == sorted(
        p.name for p in (built, *others))


@pytest.mark.parametrize(("find", "replace", "says"), [
    ("Conv_0                   1 1 input.1_splitncnn_1 54 0=64 1=3 4=1",
     "Conv_0                   1 1 input.1_splitncnn_1 54 0=64 1=3 3=0 4=1",
     "line 5 (Convolution Conv_0): kernel 3x3, dilation 1x1 and stride 0x0 must be at least 1"),
    ("105 106 0=4", "105 106 0=0", "(PixelShuffle DepthToSpace_35): upscale factor 0 must be"),
    ("1=4.000000e+00 2=4.000000e+00", "1=0 2=0", "(Interp Resize_37): scale 0.0x0.0 must be"),
])
def test_a_malformed_param_file_is_one_line_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], find: str, replace: str,
        says: str) -> None:
    from PIL import Image

    from upscaler.cli import main

    ref = resolve_model("realesr-animevideov3")
    param = tmp_path / "bad.param"
    text = ref.path.read_text()
    assert find in text
    param.write_text(text.replace(find, replace))
    shutil.copy(ref.bin_path, tmp_path / "bad.bin")
    Image.fromarray(draw_cel(16, 16)).save(tmp_path / "a.png")
    assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"),
                 "--model", str(param)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(param) in err[0] and says in err[0], err
    assert not (tmp_path / "b.png").exists()
