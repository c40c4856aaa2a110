"""Where upscaler keeps what it made once and may reuse: built models, what ffmpeg can do."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_ENV = "UPSCALER_CACHE_DIR"
FFMPEG_FACTS = "ffmpeg"  # the folder of what ffmpeg binaries said of themselves (ffmpeg_facts.py)


def cache_dir() -> Path:
    """$UPSCALER_CACHE_DIR, else the platform's user cache directory for upscaler."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(platformdirs.user_cache_dir("upscaler", appauthor=False))
