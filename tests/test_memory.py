"""Real out-of-memory, under an address-space limit (`ulimit -v`) in a subprocess.

The limits are set relative to the address space a run on a tiny image maps (the libraries,
the model, the runtime's threads). Measured on the development machine (2 cores, Linux), a
600x400 image (420x620 with the border padding) whole through animevideov3 needs more than
500 MB over that on ncnn (it peaks 747 MB over it), about 350 MB on ONNX Runtime. ncnn's net,
whose pools keep what the failed attempt took, is loaded afresh after an out-of-memory error:
250 and 450 MB, which failed every time before that, let the halved tiles through every time
(docs/memory.md has the table, and how one heap for every thread moved these figures).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import ROOT, psnr

from upscaler.errors import ExecutorError, is_out_of_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/self/status; RLIMIT_AS as on Linux")

MODEL = "realesr-animevideov3"
_RUN = """
import resource, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from upscaler.cli import main
code = main(sys.argv[2:])
with open('/proc/self/status') as status:
    peak = [line.split()[1] for line in status if line.startswith('VmPeak:')][0]
print('vmpeak', int(peak) * 1024)
sys.exit(code)
"""


def _upscale(src: Path, dst: Path, executor: str, limit: int = 0,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RUN, str(limit), str(src), "-o", str(dst), "--model", MODEL,
         "--executor", executor, "--tile", "0", "--overwrite", "-q"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from draw import draw_cel

    folder = tmp_path_factory.mktemp("oom")
    PIL.Image.fromarray(draw_cel(400, 600)).save(folder / "big.png")
    PIL.Image.fromarray(draw_cel(16, 16)).save(folder / "tiny.png")
    PIL.Image.fromarray(draw_cel(1400, 2000)).save(folder / "huge.png")
    return folder


def _base(images: Path, executor: str) -> int:
    """The address space a run maps with next to no image."""
    done = _upscale(images / "tiny.png", images / f"tiny-{executor}.png", executor)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def _with_room(extra_mb: int, setup: str, run: str, *args: object,
               ) -> subprocess.CompletedProcess[str]:
    """Python running `setup`, then `run` with `extra_mb` of address space left beyond what
    setup mapped (RLIMIT_AS), given `args`."""
    limit = """
import resource, sys
with open('/proc/self/status') as status:
    size = [int(line.split()[1]) for line in status if line.startswith('VmSize:')][0] * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (EXTRA << 20), size + (EXTRA << 20)))
""".replace("EXTRA", str(extra_mb))
    return subprocess.run([sys.executable, "-c", f"import sys\n{setup}{limit}{run}",
                           *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.fixture(scope="module")
def ncnn_whole(images: Path) -> tuple[np.ndarray, int]:
    """The image upscaled whole without a limit, and the tiny run's address space."""
    free = _upscale(images / "big.png", images / "free-ncnn.png", "ncnn")
    assert free.returncode == 0, free.stderr
    return np.asarray(PIL.Image.open(images / "free-ncnn.png")), _base(images, "ncnn")


@pytest.mark.parametrize("extra_mb", [250, 450])
def test_out_of_memory_retries_with_smaller_tiles(images: Path, ncnn_whole: tuple[np.ndarray, int],
                                                  extra_mb: int) -> None:
    whole, base = ncnn_whole
    out = images / f"limited-{extra_mb}.png"
    limited = _upscale(images / "big.png", out, "ncnn", base + (extra_mb << 20))
    assert limited.returncode == 0, limited.stderr
    lines = limited.stderr.splitlines()
    # The whole frame did not fit; halved tiles did, and the user is told, in our lines only.
    assert lines and re.fullmatch(r"upscale: ncnn: out of memory with 420x620 px tiles; "
                                  r"trying tiles of at most 310 px", lines[0]), limited.stderr
    assert all(line.startswith("upscale: ") for line in lines), limited.stderr
    tiled = np.asarray(PIL.Image.open(out))
    assert tiled.shape == whole.shape == (1600, 2400, 3)
    assert psnr(tiled, whole, 255) > 45  # tiles differ from the whole frame at seams only


def test_our_buffers_get_the_memory_the_runtime_kept(images: Path,
                                                     ncnn_whole: tuple[np.ndarray, int]) -> None:
    # ONNX Runtime's arena keeps what its largest call took, and the writer's copy of the
    # output for Pillow (11 MB) then needs memory. A few MB under the job's own peak without a
    # limit the frame still runs whole, and the image is written only because that arena is
    # freed (the session made again) and the write tried once more: with `release_memory`
    # doing nothing, the job ended with exit 4 at 5-14 MB under the peak here.
    free = _upscale(images / "big.png", images / "free-onnxruntime.png", "onnxruntime")
    assert free.returncode == 0, free.stderr
    peak = int(free.stdout.split()[-1])
    out = images / "after-arena.png"
    done = _upscale(images / "big.png", out, "onnxruntime", peak - (9 << 20))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # nothing to say: the frame ran whole, as planned
    whole, _ = ncnn_whole
    assert psnr(np.asarray(PIL.Image.open(out)), whole, 255) > 60


def test_out_of_memory_with_nothing_that_fits_is_one_line(images: Path) -> None:
    # The 8000x5600 output alone (134 MB) cannot fit in 100 MB, whatever the tiles: a
    # deterministic "nothing fits" (a limit near the retry window would not be; see above).
    done = _upscale(images / "huge.png", images / "none.png", "onnxruntime",
                    _base(images, "onnxruntime") + (100 << 20))
    assert done.returncode == ExecutorError.exit_code, done.stderr
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("upscale: error: ") and "out of memory" in lines[-1], lines
    assert all(line.startswith("upscale: ") for line in lines), done.stderr
    assert not (images / "none.png").exists()


def test_a_large_image_runs_in_tiles_of_bounded_memory(tmp_path: Path) -> None:
    # A 1000x640 image through animevideov3 on ncnn: with a quarter of the RAM for one call
    # it ran whole and peaked at 2.04 GB (measured, 0.2.0); under the 2 GiB cap it runs in 2
    # tiles and peaks at 1.26 GB, in the same 6.2 s. Peak RSS (VmHWM) of the whole process.
    from draw import draw_cel

    src = tmp_path / "large.png"
    PIL.Image.fromarray(draw_cel(640, 1000)).save(src)
    run = _RUN.replace("VmPeak:", "VmHWM:")
    done = subprocess.run(
        [sys.executable, "-c", run, "0", str(src), "-o", str(tmp_path / "out.png"),
         "--model", MODEL, "--executor", "ncnn", "-q"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    peak = int(done.stdout.split()[-1])
    assert peak < 1.6e9, f"{peak / 1e9:.2f} GB"
    with PIL.Image.open(tmp_path / "out.png") as out:
        assert out.size == (4000, 2560)


@pytest.mark.parametrize("model", ["realesr-animevideov3", "realcugan-x2-no-denoise"])
def test_every_model_on_ncnn_can_free_its_kept_memory(model: str) -> None:
    """The write retry frees the runtime's pools through release_memory, also through the
    Real-CUGAN/waifu2x wrapper (executors/processed.py), and the next frame runs again."""
    from upscaler.config import Options
    from upscaler.pipeline import Upscaler

    up = Upscaler(Options(model=model, executor="ncnn"))
    try:
        frame = np.full((16, 16, 3), 90, np.uint8)
        first = up.frames.upscale(frame).copy()
        assert up.release_memory()
        assert np.array_equal(up.frames.upscale(frame), first)
    finally:
        up.close()


def test_opencv_running_out_is_out_of_memory() -> None:
    # OpenCV raises its own cv2.error (code StsNoMem) where numpy raises MemoryError: the
    # frame's retry with smaller tiles and the one-line exit 4 must know it as running out (a
    # 600x400 image on ONNX Runtime at 340 MB over the tiny-image baseline ended in a
    # traceback from the conversion of the model's output before they did).
    done = _with_room(12, """
import numpy as np
from upscaler.errors import is_out_of_memory, memory_message
from upscaler.pixels import from_planes
planes = np.zeros((3, 2000, 4000), np.float32)
out = np.empty((2000, 4000, 3), np.uint8)
""", """
try:
    from_planes(planes, np.uint8, out=out)  # three 8 MB planes before the merge
except Exception as e:
    print(type(e).__name__, is_out_of_memory(e), memory_message(e))
""")
    assert done.stdout.strip() == ("error True out of memory: Failed to allocate 8000000 bytes"
                                   ), done.stdout + done.stderr
    assert not is_out_of_memory(ExecutorError("no such device"))
    assert is_out_of_memory(MemoryError())


def test_running_out_around_the_model_ends_a_video_job_in_one_line(tmp_path: Path) -> None:
    # Where a video job's own buffers around the model cannot be had (here OpenCV's output in
    # the frame transform, refused by an address-space limit), the job ends with our
    # OutOfMemoryError (exit 4), naming the output, and leaves nothing behind.
    from clips import make_clip

    clip = make_clip(tmp_path / "in.mkv", seconds=0.5)
    out = tmp_path / "out.mkv"
    done = _with_room(600, """
import cv2
from upscaler.errors import OutOfMemoryError
from upscaler.video import upscale_video
""", """
try:
    upscale_video(sys.argv[1], sys.argv[2], lambda frame: cv2.resize(frame, (16000, 16000)))
except OutOfMemoryError as e:
    print(e.exit_code, e)
""", clip, out)
    assert done.stdout.splitlines() == [
        f"4 {out}: out of memory: Failed to allocate 768000000 bytes"], done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


def test_a_thread_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    # Under `ulimit -v` every thread's stack is address space, and a thread that finds none
    # raised RuntimeError("can't start new thread") as a traceback (a 3 s clip at 600 MB); it is
    # the job's error now, naming its file.
    # Here our threads ask for 1 GiB stacks (ffmpeg's own are untouched) beside 512 MB of room.
    from clips import make_clip

    clip = make_clip(tmp_path / "in.mkv", seconds=0.5)
    out = tmp_path / "out.mkv"
    done = _with_room(512, """
import threading
from upscaler.cli import main
threading.stack_size(1 << 30)
""", "sys.exit(main(sys.argv[1:]))", clip, "-o", out, "--model", MODEL, "-q")
    assert (done.returncode, done.stderr) == (
        ExecutorError.exit_code, f"upscale: error: {clip}: out of memory: can't start new thread\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


def test_pyav_that_cannot_load_says_so(tmp_path: Path) -> None:
    # Without ffprobe, probing loads PyAV; under a tight `ulimit -v` its libraries cannot be
    # mapped, which read as "install PyAV" before. Now the reason is given.
    clip = tmp_path / "in.mkv"
    done = _with_room(8, """
from pathlib import Path
from upscaler.errors import MediaError
from upscaler.media.video.probe_pyav import pyav_json
""", """
try:
    pyav_json(Path(sys.argv[1]))
except MediaError as e:
    print(e)
""", clip)
    assert done.stdout.startswith(f"{clip}: PyAV, which probes without ffprobe, cannot load: "
                                  ), done.stdout + done.stderr
