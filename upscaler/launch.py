"""The `upscale` command's entry point: the CLI imported inside a guard, so that a Ctrl-C
while numpy, OpenCV and the runtimes load (the first third of a second) ends the command with
one line and exit 130, as it does once the command runs, not with a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from upscaler.cli import main as run
    except KeyboardInterrupt:
        print("upscale: interrupted", file=sys.stderr)
        return 130
    return run()
