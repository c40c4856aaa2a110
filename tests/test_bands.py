"""Large frames are converted in row bands on every core of a host with cores to spare
(upscaler/bands.py), and come out the same to the bit as in one piece. This machine has fewer
than bands.MIN_CORES, so the tests lend the module workers of their own."""

from __future__ import annotations

import threading
from itertools import pairwise

import numpy as np
import pytest

from upscaler import bands
from upscaler.media.video.yuv import converter
from upscaler.pixels import from_planes

HEIGHT, WIDTH = 1088, 1920  # over a megapixel
BANDS = 4  # the calling thread and three workers


@pytest.fixture(scope="module")
def three_workers() -> bands._Workers:
    workers = bands._Workers(BANDS - 1)
    if workers.count < BANDS - 1:
        pytest.skip("no room to start threads")
    return workers


@pytest.fixture
def workers(three_workers: bands._Workers, monkeypatch: pytest.MonkeyPatch) -> bands._Workers:
    """Workers as a 4-core host has them, for one test."""
    monkeypatch.setattr(bands, "_workers", lambda pid: three_workers)
    return three_workers


def test_small_frames_stay_whole_and_large_ones_are_cut_on_block_edges() -> None:
    assert bands.band_edges(360, 640) == [0, 360]
    edges = bands.band_edges(2164, 3840, step=4)  # half of 2164 is no multiple of 4
    assert edges[0] == 0 and edges[-1] == 2164
    assert all(b - a >= bands.BAND_MIN_ROWS for a, b in pairwise(edges))
    assert all(edge % 4 == 0 for edge in edges)
    assert len(edges) - 1 == min(bands.cores(), bands.MAX_BANDS, 2164 // bands.BAND_MIN_ROWS)


def test_only_hosts_with_cores_to_spare_have_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bands, "cores", lambda: bands.MIN_CORES - 1)
    assert bands._workers.__wrapped__(0).count == 0
    monkeypatch.setattr(bands, "cores", lambda: bands.MIN_CORES)
    assert bands._workers.__wrapped__(0).count == bands.MIN_CORES - 1
    monkeypatch.setattr(bands, "cores", lambda: 64)  # a big host: no more than MAX_BANDS
    assert bands._workers.__wrapped__(0).count == bands.MAX_BANDS - 1


def test_every_row_is_done_once_on_every_core(workers: bands._Workers) -> None:
    done: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def work(top: int, bottom: int) -> None:
        with lock:
            done.append((top, bottom, threading.current_thread().name))

    edges = bands.band_edges(HEIGHT, WIDTH, most=BANDS)
    assert len(edges) == BANDS + 1
    bands.in_bands(HEIGHT, WIDTH, work)
    assert sorted((top, bottom) for top, bottom, _ in done) == list(pairwise(edges))
    names = {top: name for top, _, name in done}
    assert names[0] == threading.current_thread().name
    assert all(name.startswith("bands-") for top, name in names.items() if top)


def test_a_band_that_fails_on_a_worker_is_done_again_here_then_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    workers = bands._Workers(1)
    if workers.count == 0:
        pytest.skip("no thread could start")
    monkeypatch.setattr(bands, "_workers", lambda pid: workers)
    here = threading.current_thread().name
    runs: list[tuple[int, str]] = []

    def work(top: int, bottom: int) -> None:
        runs.append((top, threading.current_thread().name))
        if top and threading.current_thread().name != here:
            raise MemoryError("a worker's heap found no room")  # as under `ulimit -v`

    bands.in_bands(HEIGHT, WIDTH, work)
    second = bands.band_edges(HEIGHT, WIDTH, most=2)[1]
    assert sorted(runs) == sorted([(0, here), (second, "bands-0"), (second, here)])
    assert workers.count == 0  # the next frames run whole here

    def broken(top: int, bottom: int) -> None:
        raise ValueError(f"rows {top}-{bottom}")

    with pytest.raises(ValueError, match=f"rows 0-{HEIGHT}"):
        bands.in_bands(HEIGHT, WIDTH, broken)


def test_a_band_that_bands_again_runs_in_one_piece(workers: bands._Workers) -> None:
    inner: list[tuple[int, int]] = []

    def work(top: int, bottom: int) -> None:
        if top:  # in a worker: all of them may be busy with this call's bands
            bands.in_bands(HEIGHT, WIDTH, lambda t, b: inner.append((t, b)))

    bands.in_bands(HEIGHT, WIDTH, work)
    assert inner == [(0, HEIGHT)] * (BANDS - 1)


def test_where_no_thread_can_start_the_frame_runs_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    none = bands._Workers(3)
    assert none.count == 0
    monkeypatch.setattr(bands, "_workers", lambda pid: none)
    calls: list[tuple[int, int]] = []
    bands.in_bands(HEIGHT, WIDTH, lambda top, bottom: calls.append((top, bottom)))
    assert calls == [(0, HEIGHT)]


@pytest.mark.parametrize("planes", [np.float32, np.float16])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_model_output_to_pixels_in_bands_is_the_whole_frames(
        planes: type, dtype: type, workers: bands._Workers,
        monkeypatch: pytest.MonkeyPatch) -> None:
    output = (np.random.default_rng(0).random((3, HEIGHT, WIDTH)) * 1.2 - 0.1).astype(planes)
    banded = from_planes(output, dtype)
    monkeypatch.setattr(bands, "BAND_MIN_PIXELS", 1 << 40)
    np.testing.assert_array_equal(banded, from_planes(output, dtype))


@pytest.mark.parametrize(("pix_fmt", "dtype", "value_range"), [
    ("yuv420p", np.uint8, "tv"), ("yuv422p", np.uint8, "pc"), ("yuv444p", np.uint8, "tv"),
    ("yuv420p10le", np.uint16, "pc"), ("yuv422p10le", np.uint16, "tv"),
    ("nv12", np.uint8, "tv"), ("p010le", np.uint16, "pc"),
    ("yuva420p", np.uint8, "tv"), ("yuva444p10le", np.uint16, "tv")])
def test_ycbcr_in_bands_is_the_whole_frames(pix_fmt: str, dtype: type, value_range: str,
                                            workers: bands._Workers,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    peak = np.iinfo(dtype).max
    alpha = pix_fmt.startswith("yuva")
    padded = (np.random.default_rng(1).random((HEIGHT + 8, WIDTH + 8, 3 + alpha))
              * peak).astype(dtype)
    frame = padded[4:-4, 4:-4]  # a view, as the writer gets a frame with its border cut off
    ycbcr = converter(pix_fmt, "bt709", value_range, dtype, HEIGHT, WIDTH, alpha)
    assert ycbcr is not None
    banded = ycbcr.convert(frame).copy()
    monkeypatch.setattr(bands, "BAND_MIN_PIXELS", 1 << 40)
    np.testing.assert_array_equal(banded, ycbcr.convert(frame))
