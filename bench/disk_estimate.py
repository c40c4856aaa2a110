"""How close the disk space estimate (upscaler/job/space.py) comes to what a job really writes.

For drawn animation at a few sizes (samples/draw.py, encoded like samples/clip.mkv), the model
(realesr-animevideov3 on ncnn) upscales every frame once; the frames are then encoded into
segments with several encoder settings, as a job would. Each row compares the segments' real
size with the estimate before its MARGIN (space.trial_sizes: Lanczos-enlarged source frames through
the same encoder, one keyframe per segment), with the estimate the check uses (times
space.margin()), and with the naive source bytes x scale^2.

    python bench/disk_estimate.py [--frames 96] [--sizes 160x90,320x180,480x270]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))

SETTINGS = {"x264 default": {}, **{f"x264 crf {c}": {"crf": c} for c in (12, 16, 18, 20, 28)},
            "x264 slow": {"preset": "slow"}, "x265 default": {"codec": "libx265"}}


def make_source(path: Path, width: int, height: int, frames: int) -> Path:
    from draw import draw_cel

    from upscaler.media import ffmpeg

    args = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-f", "rawvideo",
            "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", "24000/1001",
            "-i", "pipe:0", "-vf", "scale=out_color_matrix=bt709:flags=accurate_rnd,"
            "format=yuv420p", "-c:v", "libx264", "-crf", "20", "-pix_fmt", "yuv420p",
            str(path)]
    with ffmpeg.Process(args, path, stdin=True) as proc:
        for i in range(frames):
            proc.stdin.write(draw_cel(height, width, t=i / frames).tobytes())
        proc.finish("writing the source failed")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--sizes", default="160x90,320x180,480x270")
    args = parser.parse_args()

    from upscaler.config import Options
    from upscaler.job.space import margin, trial_sizes
    from upscaler.media.video.encoding import VideoSettings, choose_encoding
    from upscaler.media.video.probe import probe
    from upscaler.media.video.reader import VideoReader
    from upscaler.media.video.segments import encode_segments, plan_segments
    from upscaler.pipeline import Upscaler

    print(f"{'source':>9} {'settings':>13} {'real':>9} {'trial':>9} {'ratio':>6} "
          f"{'checked':>7} {'naive':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp, \
            Upscaler(Options(model="realesr-animevideov3", executor="ncnn")) as up:
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            src = make_source(Path(tmp) / f"{size}.mkv", width, height, args.frames)
            info = probe(src)
            with VideoReader(info) as reader:
                frames = [up.upscale_frame(f) for f in reader]
            for name, kw in SETTINGS.items():
                settings = VideoSettings(segment_seconds=4.0, **kw)
                segments = plan_segments(info, settings.segment_seconds)
                out = [Path(tmp) / f"{size}-{name}-{s.name}".replace(" ", "_") for s in segments]
                feed = iter(frames)
                encode_segments(info, segments, lambda _f, it=feed: next(it), settings, out)
                real = sum(p.stat().st_size for p in out)
                encoding = choose_encoding(info, settings, ".mkv")
                first, rest = trial_sizes(info, encoding, (width * 4, height * 4))
                estimate = sum(first + (s.count - 1) * rest for s in segments)
                naive = info.video_bytes * 16
                checked = estimate * margin(settings.crf)
                print(f"{size:>9} {name:>13} {real:>9} {estimate:>9} {real / estimate:>6.2f} "
                      f"{real / checked:>7.2f} {naive:>9} {real / naive:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
