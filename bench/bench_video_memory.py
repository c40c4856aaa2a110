"""Peak memory of upscale_video on a short and a long clip: it should not grow with length.

Each run happens in a fresh Python process, so its peak resident set is its own. The figure
for the Python process (queues, frames, numpy) and the largest ffmpeg child are reported
separately; both should match between the short and the long clip within 10%.

    python bench/bench_video_memory.py [--size 640x360] [--short 10] [--long 60]

The short clip must still span a few segments (4 s each by default): an encoder's own buffers
(x264's lookahead) fill up over the first segment, after which nothing grows.

Reading the ffmpeg column: every segment has its own decoder and encoder, so nothing can build
up across segments, but one x264 encoder's peak varies from run to run. Logged per call
(UPSCALER_FFMPEG pointing at a `/usr/bin/time -f %M` wrapper), 640x360 -> 1280x720 segments
peaked anywhere between 82 and 120 MiB, in no order, over the 15 segments of the long clip. A long
clip draws more of those samples, so its largest can exceed the short clip's by more than 10%
(1.03, 1.19 and 1.18 in three runs) while the Python process stays within 0.2%.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_source(path: Path, size: str, seconds: float) -> None:
    from upscaler.media import ffmpeg

    ffmpeg.run([ffmpeg.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y",
                "-f", "lavfi", "-i", f"testsrc2=s={size}:r=24000/1001:d={seconds}",
                "-f", "lavfi", "-i", f"sine=f=440:d={seconds}",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                "-c:a", "aac", str(path)], path)


def child(src: str, dst: str) -> None:
    """Upscale x2 (nearest) and print this process's and its children's peak RSS as JSON."""
    import cv2
    import numpy as np

    from upscaler.video import VideoSettings, upscale_video

    def double(frame: np.ndarray) -> np.ndarray:
        return cv2.resize(frame, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)

    start = time.perf_counter()
    frames = []
    upscale_video(src, dst, double, VideoSettings(preset="ultrafast"),
                  progress=lambda done, total: frames.append(done) if done == total else None)
    # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN gives the largest waited-for child.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"python_mib": own, "ffmpeg_mib": kids, "frames": frames[-1],
                      "seconds": time.perf_counter() - start}))


def measure(src: Path, dst: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", str(src), str(dst)],
                          capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--short", type=float, default=10.0, help="seconds")
    parser.add_argument("--long", type=float, default=60.0, help="seconds")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, seconds in (("short", args.short), ("long", args.long)):
            src, dst = Path(tmp) / f"{name}.mkv", Path(tmp) / f"{name}-x2.mkv"
            make_source(src, args.size, seconds)
            results[name] = measure(src, dst)
    print(f"{'clip':<6} {'frames':>7} {'python MiB':>11} {'ffmpeg MiB':>11} {'fps':>6}")
    for name, r in results.items():
        print(f"{name:<6} {r['frames']:>7.0f} {r['python_mib']:>11.1f} {r['ffmpeg_mib']:>11.1f} "
              f"{r['frames'] / r['seconds']:>6.1f}")
    ratio = results["long"]["python_mib"] / results["short"]["python_mib"]
    kid_ratio = results["long"]["ffmpeg_mib"] / results["short"]["ffmpeg_mib"]
    print(f"long/short peak: python {ratio:.3f}, ffmpeg {kid_ratio:.3f} (flat if within 1.10)")
    return 0 if max(ratio, kid_ratio) <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
