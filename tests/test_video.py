"""The video path end to end on clips made here with ffmpeg: probe, decode, segments, join, mux."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from clips import decode_all, make_clip, make_flat_clip, packet_checksums, remux
from conftest import psnr
from draw import draw_cel
from make_clip import FRAMES, drawing_time

from upscaler.errors import MediaError, OutputExistsError
from upscaler.job.resume import work_dir
from upscaler.media import ffmpeg
from upscaler.media.video.probe import _ffprobe_json, _parse, probe
from upscaler.media.video.probe_pyav import pyav_json
from upscaler.media.video.reader import VideoReader
from upscaler.media.video.segments import (
    Segment,
    decoding_runs,
    encode_segment,
    plan_segments,
)
from upscaler.media.video.writer import ENCODER_NICE, write_rows
from upscaler.video import StageTimes, VideoSettings, upscale_video

FAST = VideoSettings(crf=8, preset="ultrafast", segment_seconds=0.5)


def double(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)


def triple(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)


def assert_same_frames(out: list[np.ndarray], expected: list[np.ndarray], peak: float) -> None:
    """Each output frame is closest to the frame at its own index: none dropped, none doubled.

    Measured on the clips here: 35.3 dB or more to its own frame (lossy H.264/H.265), at least
    15.3 dB more than to either neighbour.
    """
    assert len(out) == len(expected)
    for k, frame in enumerate(out):
        own = psnr(frame, expected[k], peak)
        assert own > 32, f"frame {k}: {own:.1f} dB"
        for j in (k - 1, k + 1):
            if 0 <= j < len(expected):
                other = psnr(frame, expected[j], peak)
                assert own > other + 10, f"frame {k} looks like frame {j}"


@pytest.fixture(scope="module")
def mkv_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "everything.mkv"
    return make_clip(path, audio=True, subtitles=True, attachment=True, chapters=True)


def test_probe_reports_rate_as_rational_and_every_stream(mkv_clip: Path) -> None:
    info = probe(mkv_clip)
    assert info.frame_rate == Fraction(24000, 1001)
    assert info.frame_count == 30  # 1.25 s at 23.976 fps
    assert (info.width, info.height, info.rotation) == (64, 36, 0)
    assert (info.pix_fmt, info.bit_depth) == ("yuv420p", 8)
    assert (info.color_matrix, info.color_primaries, info.color_transfer, info.color_range) == (
        "bt709", "bt709", "bt709", "tv")
    assert [s.kind for s in info.streams] == ["video", "audio", "subtitle", "attachment"]
    assert [c.title for c in info.chapters] == ["Opening", "Ending"]
    assert not info.vfr


@pytest.mark.skipif(ffmpeg.ffprobe_exe() is None, reason="needs ffprobe to compare against")
def test_pyav_probe_agrees_with_ffprobe(mkv_clip: Path, tmp_path: Path) -> None:
    rotated = make_clip(tmp_path / "rot.mp4", rotation=90, tags=())
    anamorphic = make_clip(tmp_path / "dvd.mkv", size="48x32", seconds=0.3, sar="32/27")
    for path in (mkv_clip, rotated, anamorphic):
        exe = ffmpeg.ffprobe_exe()
        assert exe is not None
        by_ffprobe = _parse(path, _ffprobe_json(exe, path))
        by_pyav = _parse(path, pyav_json(path))
        # Container start times differ by how each FFmpeg version treats AAC priming.
        assert by_pyav.frame_rate == by_ffprobe.frame_rate
        assert by_pyav.rotation == by_ffprobe.rotation
        assert by_pyav.sar == by_ffprobe.sar
        assert [(s.kind, s.codec) for s in by_pyav.streams] == [
            (s.kind, s.codec) for s in by_ffprobe.streams]
        assert by_pyav.chapters == by_ffprobe.chapters
        assert (by_pyav.color_matrix, by_pyav.color_range, by_pyav.pix_fmt) == (
            by_ffprobe.color_matrix, by_ffprobe.color_range, by_ffprobe.pix_fmt)


def test_mkv_keeps_streams_rate_count_and_colour(mkv_clip: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.mkv"
    seen: list[tuple[int, int]] = []
    upscale_video(mkv_clip, dst, double, FAST, progress=lambda d, t: seen.append((d, t)))
    src, out = probe(mkv_clip), probe(dst)
    assert len(plan_segments(src, FAST.segment_seconds)) >= 3
    assert (out.width, out.height) == (128, 72)
    assert out.frame_count == src.frame_count
    assert out.frame_rate == Fraction(24000, 1001)
    assert [(s.kind, s.codec) for s in out.streams] == [
        ("video", "h264"), ("audio", "aac"), ("subtitle", "subrip"), ("attachment", "ttf")]
    assert out.streams[3].tags.get("filename") == "font.ttf"
    assert [c.title for c in out.chapters] == ["Opening", "Ending"]
    assert (out.color_matrix, out.color_primaries, out.color_transfer, out.color_range) == (
        "bt709", "bt709", "bt709", "tv")
    assert out.bit_depth == 8
    # Audio is copied packet for packet, not re-encoded.
    assert packet_checksums(dst, "a:0") == packet_checksums(mkv_clip, "a:0")
    assert seen[0] == (0, 30) and seen[-1] == (30, 30)
    assert_same_frames(decode_all(dst), [double(f) for f in decode_all(mkv_clip)], 255)
    assert not work_dir(dst).exists()


@pytest.mark.parametrize(("codec", "tags"), [
    ("libvpx-vp9", ("smpte170m", "smpte170m", "smpte170m", "tv")),  # an NTSC DVD's
    ("libvpx-vp9", ("bt2020nc", "bt2020", "smpte2084", "tv")),  # HDR10's
    ("ffv1", ("bt709", "bt709", "bt709", "tv")),
    ("libvpx", ("bt470bg", "bt470bg", "bt709", "tv")),  # VP8, a PAL source's
])
def test_colour_tags_are_kept_whatever_the_codec_holds(tmp_path: Path, codec: str,
                                                       tags: tuple[str, ...]) -> None:
    """The segments' colour tags reach the output through the codec's bitstream, and VP9's
    holds no primaries or transfer, FFV1's and VP8's none at all: they came out untagged
    (an HDR10 source to VP9 lost its PQ transfer), as libx264's did not. The join tags the
    video itself now."""
    from upscaler.cli import main

    matrix, primaries, transfer, value_range = tags
    src = make_clip(tmp_path / "src.mkv", seconds=0.5, pix_fmt="yuv420p", tags=(
        "-colorspace", matrix, "-color_primaries", primaries, "-color_trc", transfer,
        "-color_range", value_range))
    info = probe(src)
    assert (info.color_matrix, info.color_primaries, info.color_transfer,
            info.color_range) == tags
    out = tmp_path / f"{codec}.mkv"
    assert main([str(src), "-o", str(out), "--codec", codec, "--model",
                 str(Path(__file__).parent / "data" / "nearest4x.onnx"), "--executor",
                 "onnxruntime", "--quiet"]) == 0
    got = probe(out)
    assert (got.codec, got.color_matrix, got.color_primaries, got.color_transfer,
            got.color_range) == ({"libvpx-vp9": "vp9", "libvpx": "vp8"}.get(codec, codec), *tags)


def test_a_full_range_source_to_prores_keeps_its_levels(tmp_path: Path) -> None:
    """ProRes holds limited range only: the full-range codes the writer made of a full-range
    source (a PNG-in-MOV's, an MJPEG's) were read back as limited, every level stretched
    (28..227 came back as 14..247, 27 dB). They are written limited now, as ffmpeg does."""
    from upscaler.cli import main

    src = make_clip(tmp_path / "full.mkv", seconds=0.5, pix_fmt="yuv444p", tags=(
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-color_range", "pc"))
    assert probe(src).color_range == "pc"
    out = tmp_path / "out.mov"
    assert main([str(src), "-o", str(out), "--codec", "prores_ks", "--model",
                 str(Path(__file__).parent / "data" / "nearest4x.onnx"), "--executor",
                 "onnxruntime", "--quiet"]) == 0
    assert probe(out).color_range == "tv"
    want = np.stack(decode_all(src)).astype(float)
    got = np.stack(decode_all(out))[:, ::4, ::4] / 257.0  # 10-bit ProRes decodes to 16 bits
    assert abs((got - want).mean()) < 1  # no shift (0.47 measured; 3 levels before)
    assert psnr(got, want, 255) > 40, psnr(got, want, 255)


def test_ten_bit_hevc_stays_ten_bit(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "deep.mkv", codec="libx265", pix_fmt="yuv420p10le", seconds=0.5)
    dtypes: set[np.dtype] = set()

    def record(frame: np.ndarray) -> np.ndarray:
        dtypes.add(frame.dtype)
        return double(frame)

    dst = upscale_video(src, tmp_path / "deep-x2.mp4", record, FAST)
    out = probe(dst)
    assert dtypes == {np.dtype(np.uint16)}
    assert (out.codec, out.pix_fmt, out.bit_depth) == ("hevc", "yuv420p10le", 10)
    assert out.frame_count == probe(src).frame_count
    assert out.frame_rate == Fraction(24000, 1001)
    assert out.color_matrix == "bt709"
    frames = decode_all(src)
    # Real 10-bit content: 48-bit RGB with values between the 8-bit steps.
    assert frames[0].dtype == np.uint16 and np.any(frames[0] % 257)
    assert_same_frames(decode_all(dst), [double(f) for f in frames], 65535)


def test_a_deeper_output_keeps_the_models_precision(tmp_path: Path) -> None:
    """An 8-bit source written as 10-bit (`--pix-fmt yuv444p10le`, a common choice against
    banding): the model's output reached the encoder rounded to 8 bits, so a smooth ramp
    came out in steps of 4 codes, the 8-bit steps the 10 bits were chosen to smooth. Its frames
    are 16-bit from the reader on now. A linear 4x upscale of a gray ramp over 9 levels: 9
    codes along a line before, 33 now, in steps of one."""
    from onnx import TensorProto, helper, save

    from upscaler.cli import main

    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 4, 4])
    graph = helper.make_graph(
        [helper.make_node("Resize", ["input", "", "scales"], ["output"], mode="linear")],
        "linear4x", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H2", "W2"])],
        initializer=[scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, tmp_path / "linear4x.onnx")
    ramp = np.rint(np.tile(np.linspace(60, 68, 96), (16, 1))).astype(np.uint8)
    (tmp_path / "ramp.gray").write_bytes(ramp.tobytes())
    src = tmp_path / "ramp.mkv"  # lossless, full range: the ramp's levels as they are
    ffmpeg.run([ffmpeg.ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "gray",
                "-s", "96x16", "-r", "24", "-i", str(tmp_path / "ramp.gray"), "-c:v", "ffv1",
                "-pix_fmt", "yuv444p", "-color_range", "pc", "-colorspace", "bt709", str(src)])
    out = tmp_path / "ramp10.mkv"
    assert main([str(src), "-o", str(out), "--model", str(tmp_path / "linear4x.onnx"),
                 "--codec", "ffv1", "--pix-fmt", "yuv444p10le", "-q"]) == 0
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == "yuv444p10le"
        luma = np.frombuffer(frame.planes[0], np.uint16).reshape(frame.height, -1)
    line = luma[32, :frame.width].astype(int)
    assert len(np.unique(line)) >= 30  # 9 before
    assert set(np.diff(line)) == {0, 1}  # in steps of 4 codes before


def test_odd_output_size_with_420_is_padded(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "odd.mkv", size="21x15", pix_fmt="yuv444p", seconds=0.5)
    kept = probe(upscale_video(src, tmp_path / "x3-444.mkv", triple, FAST))
    assert (kept.width, kept.height, kept.pix_fmt) == (63, 45, "yuv444p")
    settings = VideoSettings(crf=8, preset="ultrafast", pix_fmt="yuv420p")
    padded = probe(upscale_video(src, tmp_path / "x3-420.mkv", triple, settings))
    assert (padded.width, padded.height, padded.pix_fmt) == (64, 46, "yuv420p")
    assert padded.frame_count == kept.frame_count == probe(src).frame_count


def test_codec_name_picks_a_working_encoder(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "short.mkv", seconds=0.3)
    settings = VideoSettings(codec="hevc", crf=20, preset="ultrafast")
    out = probe(upscale_video(src, tmp_path / "hevc.mp4", double, settings))
    # No GPU here, so the hardware encoders fail their trial and libx265 does the work.
    assert (out.codec, out.bit_depth, out.frame_count) == ("hevc", 8, probe(src).frame_count)


def test_rotated_phone_clip_comes_out_upright(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "phone.mp4", rate="30", seconds=0.5, audio=True, rotation=90,
                    tags=())
    info = probe(src)
    assert info.rotation == 90 and info.display_size == (36, 64)
    settings = VideoSettings(crf=8, preset="ultrafast", segment_seconds=0.2)  # 3 segments
    dst = upscale_video(src, tmp_path / "phone-x2.mp4", double, settings)
    out = probe(dst)
    assert (out.width, out.height, out.rotation) == (72, 128, 0)
    assert out.frame_count == info.frame_count and out.frame_rate == 30
    assert [s.kind for s in out.streams] == ["video", "audio"]
    # Untagged SD is converted as BT.601 and tagged so, since the bigger output would
    # otherwise be read as BT.709.
    assert (out.color_matrix, out.color_range) == ("smpte170m", "tv")
    assert_same_frames(decode_all(dst), [double(f) for f in decode_all(src)], 255)


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_anamorphic_video_keeps_its_display_aspect(tmp_path: Path, suffix: str) -> None:
    """DVD-style 16:9 stored as 48x32 with 32:27 pixels comes out 16:9, not 3:2."""
    from upscaler.cli import main

    src = make_clip(tmp_path / f"dvd{suffix}", size="48x32", seconds=0.3, sar="32/27")
    info = probe(src)
    assert (info.sar, info.display_aspect) == (Fraction(32, 27), Fraction(16, 9))
    fast = ["--model", "realesr-animevideov3", "--quiet", "--crf", "8"]
    out = tmp_path / f"x4{suffix}"
    assert main([str(src), "-o", str(out), *fast]) == 0
    got = probe(out)
    assert (got.width, got.height) == (192, 128)
    assert (got.sar, got.display_aspect) == (Fraction(32, 27), Fraction(16, 9))
    # A scale that rounds the sides unevenly (62x42) changes the pixel aspect, not the shape.
    odd = tmp_path / f"x1.3{suffix}"
    assert main([str(src), "-o", str(odd), "--scale", "1.3", *fast]) == 0
    got = probe(odd)
    assert (got.width, got.height, got.display_aspect) == (62, 42, Fraction(16, 9))


def test_variable_frame_rate_timestamps_are_kept(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "vfr.mp4", rate="24", seconds=1.0, audio=True, vfr=True)
    info = probe(src)
    assert info.vfr
    for suffix in (".mp4", ".mkv"):
        out = probe(upscale_video(src, tmp_path / f"vfr-x2{suffix}", double, FAST))
        assert out.frame_count == info.frame_count
        # The oracle is ffmpeg's own stream copy into the same format: it applies the same
        # container rules (Matroska's milliseconds, the shift for AAC priming) to the same
        # timestamps, so any difference is ours.
        ref = probe(remux(src, tmp_path / f"remux{suffix}"))
        got = [out.seconds(p) for p in out.frame_pts]
        assert got == pytest.approx([ref.seconds(p) for p in ref.frame_pts], abs=1e-6)
        assert out.streams[1].start == pytest.approx(ref.streams[1].start, abs=1e-6)


@pytest.mark.parametrize("matrix", ["bt709", "smpte170m"])
def test_yuv_to_rgb_uses_the_tagged_matrix(tmp_path: Path, matrix: str) -> None:
    rgb = (200, 40, 60)  # saturated: BT.601 and BT.709 disagree by ~20 levels here
    src = make_flat_clip(tmp_path / f"{matrix}.mkv", rgb, matrix)
    frame = decode_all(src)[0]
    assert np.abs(frame.astype(int) - rgb).max() <= 3
    # And back: the encoder converts with the same matrix, so the colour survives the trip.
    settings = VideoSettings(crf=0, preset="ultrafast", pix_fmt="yuv444p")
    out = decode_all(upscale_video(src, tmp_path / f"{matrix}-out.mkv", double, settings))
    assert np.abs(out[0].astype(int) - rgb).max() <= 3


def test_a_segment_is_encoded_on_its_own(mkv_clip: Path, tmp_path: Path) -> None:
    info = probe(mkv_clip)
    segments = plan_segments(info, 0.4)
    assert [s.start for s in segments[1:]] == [s.start + s.count for s in segments[:-1]]
    assert sum(s.count for s in segments) == info.frame_count
    second = segments[1]
    path = encode_segment(mkv_clip, second, double, FAST, tmp_path / second.name)
    assert probe(path).frame_count == second.count
    with VideoReader(info, second.start, second.count) as reader:
        expected = [double(f) for f in reader]
    assert_same_frames(decode_all(path), expected, 255)


def test_existing_output_is_refused_unless_overwrite(mkv_clip: Path, tmp_path: Path) -> None:
    dst = tmp_path / "taken.mkv"
    dst.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        upscale_video(mkv_clip, dst, double, FAST)
    assert dst.read_bytes() == b"keep me"
    upscale_video(mkv_clip, dst, double, VideoSettings(preset="ultrafast", overwrite=True))
    assert probe(dst).frame_count == 30


def test_failed_transform_leaves_no_output_and_keeps_work_dir(mkv_clip: Path,
                                                             tmp_path: Path) -> None:
    calls = 0

    def fails_late(frame: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls > 20:
            raise RuntimeError("model crashed")
        return double(frame)

    dst = tmp_path / "never.mkv"
    with pytest.raises(RuntimeError, match="model crashed"):
        upscale_video(mkv_clip, dst, fails_late, FAST)
    assert not dst.exists()
    finished = sorted(p.name for p in work_dir(dst).glob("segment-*") if ".partial" not in p.name)
    # The results queue holds few frames, so the first segment was closed before the failure.
    assert finished[0] == "segment-00000.nut"


def test_mp4_refuses_fonts_before_any_work(mkv_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="attachments"):
        upscale_video(mkv_clip, tmp_path / "out.mp4", double, FAST)
    assert not work_dir(tmp_path / "out.mp4").exists()


def test_bad_input_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("hello")
    with pytest.raises(MediaError) as err:
        probe(bad)
    assert "notavideo.mp4" in str(err.value)
    with pytest.raises(MediaError, match="no such file"):
        probe(tmp_path / "missing.mkv")


def test_sample_clip_is_the_drawn_animation() -> None:
    clip = Path(__file__).resolve().parents[1] / "samples" / "clip.mkv"
    info = probe(clip)
    assert (info.width, info.height, info.frame_rate) == (160, 90, Fraction(24000, 1001))
    assert [s.kind for s in info.streams] == ["video", "audio"]
    assert clip.stat().st_size < 1_000_000
    frames = decode_all(clip)
    assert len(frames) == FRAMES
    # The drawing survives the trip through H.264 and back, frame for frame, each drawing
    # held for two frames (on twos).
    for i in (0, 1, FRAMES // 2, FRAMES // 2 + 1, FRAMES - 1):
        assert psnr(frames[i], draw_cel(90, 160, t=drawing_time(i)), 255) > 31  # 33.4-35.0


def test_plan_segments_cuts_on_time(mkv_clip: Path) -> None:
    info = probe(mkv_clip)
    segments = plan_segments(info, 0.5)
    # 24000/1001 fps: 0.5 s is 11.99 frames, so cuts fall on frames 12 and 24.
    assert segments == [Segment(0, 0, 12), Segment(1, 12, 12), Segment(2, 24, 6)]


def test_stage_times_count_where_each_stage_spent_its_time(mkv_clip: Path,
                                                           tmp_path: Path) -> None:
    def slow_double(frame: np.ndarray) -> np.ndarray:
        time.sleep(0.02)  # a model far slower than decoding and encoding 64x36 frames
        return double(frame)

    times = StageTimes()
    upscale_video(mkv_clip, tmp_path / "out.mkv", slow_double, FAST, times=times)
    assert times.model.busy >= 30 * 0.02
    # The model is the bottleneck: the encoder waits for it, and it hardly waits itself.
    assert times.encode.waiting > times.encode.busy
    assert times.encode.waiting > 0.5 * times.model.busy
    assert times.model.waiting < times.model.busy
    assert times.decode.busy > 0


# Children are read from Linux's /proc.
needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")


def ffmpeg_children() -> list[str]:
    """The pids of this process's ffmpeg children, running or finished and not yet reaped."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # threads and children come and go
            for pid in (task / "children").read_text().split():
                if "ffmpeg" in Path(f"/proc/{pid}/comm").read_text(errors="replace"):
                    pids.append(pid)
    return pids


def settled_nice(pid: int, encoder: bool) -> int:
    """The child's nice value; an encoder's once it is lowered, which happens right after it
    starts (a watch can come in between)."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    nice = os.getpriority(os.PRIO_PROCESS, pid)
    deadline = time.monotonic() + 1.0
    while encoder and nice == ours and time.monotonic() < deadline:
        time.sleep(0.002)
        nice = os.getpriority(os.PRIO_PROCESS, pid)
    return nice


def ffmpegs_during_a_job(tmp_path: Path) -> dict[str, tuple[int, dict[str, str]]]:
    """Each ffmpeg child seen while the model worked, by pid: its nice value and its MALLOC_*
    environment.

    The clip's frames are too large for the pipe and the queue to hold a segment of them
    (640x360 planes: the 1 MiB pipe holds 3, the queue 4, and a segment is 24), so the decoder
    is still running, blocked on the pipe, when the first frame reaches the model; and the
    encoder is running when the last frames of the segment do."""
    src = make_clip(tmp_path / "frames.mkv", size="640x360", seconds=1.25)
    seen: dict[str, tuple[int, dict[str, str]]] = {}
    # Only this job's: its ffmpegs name files in tmp_path. An earlier test in this process may
    # have left a child to be reaped, or a thread that starts one.
    others: set[str] = set()

    def watch(frame: np.ndarray) -> np.ndarray:
        for pid in ffmpeg_children():
            if pid in others or pid in seen:
                continue
            with contextlib.suppress(OSError):  # children come and go
                command = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
                if str(tmp_path) not in command:
                    others.add(pid)
                    continue
                raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                seen[pid] = (settled_nice(int(pid), encoder="pipe:0" in command),
                             dict(item.decode().split("=", 1) for item in raw
                                  if item.startswith(b"MALLOC_")))
        return double(frame)

    settings = VideoSettings(crf=8, preset="ultrafast", segment_seconds=1.0)
    upscale_video(src, tmp_path / "out.mkv", watch, settings)
    return seen


@needs_proc
def test_the_encoder_runs_below_the_models_priority(tmp_path: Path) -> None:
    """The model keeps its cores: the encoders are niced, the decoder is not; one decoder
    reads through both of the job's segments (a decoder per segment was seen here too)."""
    seen = ffmpegs_during_a_job(tmp_path)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    nices = [nice for nice, _ in seen.values()]
    assert set(nices) == {ours, min(19, ours + ENCODER_NICE)}
    assert nices.count(ours) == 1


def test_consecutive_segments_share_a_decoder_unless_damaged(mkv_clip: Path) -> None:
    info = probe(mkv_clip)
    first, second, third = plan_segments(info, 0.5)
    assert decoding_runs(info, [first, second, third]) == [[first, second, third]]
    # A resumed job skips the finished second segment: the third is sought on its own.
    assert decoding_runs(info, [first, third]) == [[first], [third]]
    # A deinterlaced segment read alone is what a run gives (test_video_sources.py), so
    # bwdif's segments share a decoder too.
    deinterlaced = dataclasses.replace(info, deinterlace="bwdif=mode=send_frame")
    assert decoding_runs(deinterlaced, [first, second]) == [[first, second]]
    # In accepted damage, each segment's seek finds its first frame by its time.
    damaged = dataclasses.replace(info, damaged=True)
    assert decoding_runs(damaged, [first, second]) == [[first], [second]]


@needs_proc
def test_the_ffmpegs_on_pipes_get_the_heap_settings(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder and the encoder start with glibc's heap settings for frame-sized blocks
    (heap.py), so that the encoder reuses its packets' pages; a setting of the user's stays."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    seen = ffmpegs_during_a_job(tmp_path)
    ours = os.getpriority(os.PRIO_PROCESS, 0)  # decoders run at ours, encoders below it
    assert {nice for nice, _ in seen.values()} == {ours, min(19, ours + ENCODER_NICE)}
    assert all(env == {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
                       "MALLOC_TRIM_THRESHOLD_": "12345"} for _, env in seen.values()), seen


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_write_rows_sends_a_cropped_view_in_row_order(dtype: type) -> None:
    # An upscaled frame reaches the writer as a view cropped of its border: more rows than one
    # writev takes (IOV_MAX), each row a separate piece of memory, through a real pipe.
    full = np.random.default_rng(7).integers(0, np.iinfo(dtype).max, (2100, 40, 3), dtype=dtype)
    view = full[20:-20, 3:-5]
    assert not view.flags.c_contiguous
    expected = np.ascontiguousarray(view).tobytes()
    read_fd, write_fd = os.pipe()
    received = bytearray()

    def drain() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            while chunk := pipe.read(65536):
                received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_fd, "wb", buffering=0) as pipe:
        write_rows(pipe.fileno(), view)
        write_rows(pipe.fileno(), full[:3])  # a contiguous frame goes out whole
    reader.join()
    assert bytes(received) == expected + full[:3].tobytes()
