"""Still images: read them, and write them back without losing what they hold.

The work is split by job: `image_data` (the `Image` type and the format tables),
`read` and `write`; this module gathers the names callers use.
"""

from upscaler.image_data import IMAGE_EXTENSIONS, WRITABLE_FORMATS, Image, is_image_path
from upscaler.media.images.read import read_image
from upscaler.media.images.write import (
    check_size,
    check_storable,
    format_of_extension,
    format_of_name,
    remove_unfinished,
    write_image,
    write_pages,
)

__all__ = ["IMAGE_EXTENSIONS", "WRITABLE_FORMATS", "Image", "check_size", "check_storable",
           "format_of_extension", "format_of_name", "is_image_path", "read_image",
           "remove_unfinished", "write_image", "write_pages"]
