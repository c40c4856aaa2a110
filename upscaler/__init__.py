"""upscaler: batch image and video upscaling for anime with Real-ESRGAN.

The public API is what this module re-exports; everything else is internal. The names come
from their modules on first use, so that `upscale` starts without numpy, OpenCV and the rest
loaded: a Ctrl-C in its first third of a second then ends it with one line (launch.py), not
a traceback from inside an import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from upscaler.errors import UpscalerError
from upscaler.version import __version__

if TYPE_CHECKING:
    from upscaler.api import Upscaler, compare, upscale_path
    from upscaler.comparison import Comparison
    from upscaler.pipeline import Progress

__all__ = ["Comparison", "Progress", "Upscaler", "UpscalerError", "__version__", "compare",
           "upscale_path"]

_LAZY = {"Upscaler": "upscaler.api", "compare": "upscaler.api", "upscale_path": "upscaler.api",
         "Comparison": "upscaler.comparison", "Progress": "upscaler.pipeline"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'upscaler' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
