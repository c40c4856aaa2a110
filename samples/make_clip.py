"""Write samples/clip.mkv: three seconds of drawn animation with a sine tone.

Drawn on twos, as TV anime is: 12 drawings a second, each held for two frames, so a job on it
shows held drawings reused. 160x90 at 24000/1001 fps, H.264 tagged BT.709 limited range,
stereo AAC. The frames come from draw.py and go to ffmpeg through a pipe, the way the
upscaler's own writer works.

    python samples/make_clip.py [output.mkv]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from draw import draw_cel  # noqa: E402

from upscaler.media import ffmpeg  # noqa: E402

WIDTH, HEIGHT = 160, 90
RATE = "24000/1001"
FRAMES = 72  # 3.003 s
HOLD = 2  # frames each drawing is held


def drawing_time(frame: int) -> float:
    """Where frame `frame`'s drawing is in the figure's crossing, in [0, 1)."""
    return (frame - frame % HOLD) / FRAMES


def make_clip(path: Path) -> Path:
    seconds = FRAMES * 1001 / 24000
    args = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-framerate", RATE,
            "-i", "pipe:0",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-map", "0:v", "-map", "1:a",
            "-vf", "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd+full_chroma_inp,"
                   "format=yuv420p,setparams=colorspace=bt709:color_primaries=bt709"
                   ":color_trc=bt709:range=tv",
            "-c:v", "libx264", "-crf", "20", "-pix_fmt", "yuv420p", "-colorspace", "bt709",
            "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
            "-c:a", "aac", "-b:a", "64k", "-ac", "2", "-metadata", "title=upscaler sample clip",
            str(path)]
    with ffmpeg.Process(args, path, stdin=True) as proc:
        for i in range(FRAMES):
            # The figure crosses the frame once over the clip.
            proc.stdin.write(draw_cel(HEIGHT, WIDTH, t=drawing_time(i)).tobytes())
        proc.finish("writing the sample clip failed")
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "clip.mkv"
    print(make_clip(out))
