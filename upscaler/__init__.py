"""upscaler: batch image and video upscaling for anime with Real-ESRGAN.

The public API is what this module re-exports; everything else is internal.
"""

from upscaler.api import Upscaler, upscale_path
from upscaler.errors import UpscalerError
from upscaler.pipeline import Progress
from upscaler.version import __version__

__all__ = ["Progress", "Upscaler", "UpscalerError", "__version__", "upscale_path"]
