"""Names of the hidden files and folders kept beside an output while it is made.

`.NAME.segments`, `.NAME.<hex>.tmp`, `.STEM.partial.EXT`: each adds to the output's own name,
which may itself be as long as a file system takes (255 bytes; fansubs' names run long). A
name that would not fit keeps as much of the output's name as fits and a hash of all of it, so
that it is still the same for the same output on every run (resume finds its segments again).
"""

from __future__ import annotations

import hashlib
import os

# The longest file name, in bytes, that common file systems take (ext4, APFS, NTFS in UTF-16
# units, which UTF-8 bytes never undercount).
NAME_MAX = 255


def hidden_name(name: str, tail: str, lead: str = ".") -> str:
    """`lead + name + tail` where it fits NAME_MAX; else the name cut to fit, with `~` and 16
    hex digits of its hash in place of the rest."""
    whole = f"{lead}{name}{tail}"
    if name_bytes(whole) <= NAME_MAX:
        return whole
    raw = os.fsencode(name)
    mark = "~" + hashlib.sha256(raw).hexdigest()[:16]
    room = NAME_MAX - name_bytes(f"{lead}{mark}{tail}")
    cut = raw[:room].decode(errors="ignore")  # never half a character
    return f"{lead}{cut}{mark}{tail}"


def name_bytes(name: str) -> int:
    """`name`'s length on disk: the bytes the OS takes it as, a name that is not UTF-8
    included (Python holds its stray bytes as surrogates, which str.encode refuses)."""
    return len(os.fsencode(name))
