"""Video: probing, reading, writing, encoding and muxing through ffmpeg, with the checks of what a
source holds (damage, interlacing, HDR)."""
