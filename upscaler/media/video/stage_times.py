"""Seconds each stage of the video pipeline spends working and waiting, counted as it runs.

Decoding, the model and encoding run side by side, so the job takes as long as its busiest
stage plus whatever that stage waits for. Each stage's thread adds to its own counters only
(two clock readings per frame), and the library hands them back to the caller, which decides
whether to show them; nothing is printed here.

decode: busy reading a frame from ffmpeg's pipe (ffmpeg decoding it), waiting for room in the
  queue to the model. model: busy running the transform (conversions and the executor), waiting
  for a decoded frame or for room in the queue to the encoder. encode: busy writing a frame into
  ffmpeg's pipe (blocked while ffmpeg encodes), waiting for an upscaled frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageTime:
    busy: float = 0.0
    waiting: float = 0.0


@dataclass
class StageTimes:
    decode: StageTime = field(default_factory=StageTime)
    model: StageTime = field(default_factory=StageTime)
    encode: StageTime = field(default_factory=StageTime)

    def report(self) -> str:
        """One line: each stage's busy seconds, and the busiest, which sets the job's pace (the
        others wait for it)."""
        busy = {"decode": self.decode.busy, "model": self.model.busy,
                "encode": self.encode.busy}
        slowest = max(busy, key=busy.__getitem__)
        shares = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in busy.items())
        what = {"decode": "decoding", "model": "the model", "encode": "encoding"}[slowest]
        return f"busy: {shares}; {what} set the pace"
