"""upscaler: batch image and video upscaling for anime with Real-ESRGAN."""
