"""How much of one picture the model has done, so that a still which takes minutes shows its
progress before it ends (a 3000x2000 scan through x4plus-anime on a 2-core CPU: about six
minutes, with nothing on the screen but a bar at 0 until the last tile).

A picture's model work is a list of calls: each frame's colours and, where it has any, its
alpha, each through the model's passes (waifu2x's 4x is two 2x passes, the second on four times
the pixels). A tiled call reports its tiles as they end (FrameUpscaler.on_tiles); calls weigh
by their input pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class PictureShare:
    """Turns a picture's call and tile counts into the share done, 0 to 1, given to `report`.

    `start_frame` before each of the picture's `frames` frames, with the weights of the calls
    it will make; `tiles` as a call's tiles end; `call_ended` after each call.
    """

    def __init__(self, frames: int, report: Callable[[float], None]) -> None:
        self._frames = max(1, frames)
        self._report = report
        self._frame = -1
        self._weights: list[float] = [1.0]
        self._call = 0
        self._ended = 0.0  # weight of the frame's calls that have ended

    def start_frame(self, weights: Sequence[float]) -> None:
        self._frame = min(self._frame + 1, self._frames - 1)
        self._weights = [float(w) for w in weights if w > 0] or [1.0]
        self._call, self._ended = 0, 0.0

    def tiles(self, done: int, total: int) -> None:
        """The call under way has run `done` of its `total` tiles."""
        self._send(done / total if total else 0.0)

    def call_ended(self) -> None:
        if self._call < len(self._weights):
            self._ended += self._weights[self._call]
            self._call += 1
        self._send(0.0)

    def _send(self, part: float) -> None:
        current = self._weights[self._call] * part if self._call < len(self._weights) else 0.0
        frame = (self._ended + current) / sum(self._weights)
        self._report(min(1.0, (max(0, self._frame) + frame) / self._frames))
