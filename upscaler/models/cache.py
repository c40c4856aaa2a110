"""A cache of built models (ONNX files, Core ML packages) in the user cache directory.

Entries are keyed by everything that changes the built file: the model's source files (their
content hash, so an edited user model is rebuilt), the format, the precision, the tile shape and
this package's version. Each is built under a temporary name beside its final place and renamed
into it, so a killed build or two processes building at once never leave a broken entry behind.
Its size is kept beside it (a hidden `.NAME.size`): an entry damaged afterwards (a disk that
lost its end, a file emptied by hand) is built again, where every run failed to load it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from upscaler.errors import ModelError
from upscaler.models.registry import ModelRef
from upscaler.user_cache import CACHE_ENV, FFMPEG_FACTS, cache_dir
from upscaler.version import __version__

__all__ = ["CACHE_ENV", "BuildKey", "built_path", "cache_dir", "cached_builds", "clear",
           "get_or_build"]


@dataclass(frozen=True)
class BuildKey:
    """What a built model depends on; `tile` is None for shape-dynamic builds."""

    model: ModelRef
    fmt: str  # "onnx" | "mlpackage"
    precision: str
    tile: tuple[int, int, int] | None = None  # (batch, height, width)

    def filename(self) -> str:
        shape = "dyn" if self.tile is None else "x".join(map(str, self.tile))
        ext = {"onnx": ".onnx", "mlpackage": ".mlpackage"}[self.fmt]
        source = _source_digest(self.model)[:12]
        return f"{self.model.name}-{self.precision}-{shape}-{source}-v{__version__}{ext}"


# What follows the model's name in a filename() (names have dashes too: realesrgan-x4plus is the
# start of realesrgan-x4plus-anime-fp32-..., so a prefix does not tell whose a file is).
_AFTER_NAME = re.compile(r"-[^-]+-[^-]+-[0-9a-f]{12}-v[^-]+\.(onnx|mlpackage)")


# A package version in a built file's name: 0.2.10, 1.0.0rc1, 0.3.0.dev2+g1234abc.
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+]*")


def _source_digest(model: ModelRef) -> str:
    digest = hashlib.sha256()
    files = [model.path, model.bin_path] if model.kind == "ncnn" else [model.path]
    for path in files:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def built_path(key: BuildKey) -> Path:
    return cache_dir() / key.filename()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def get_or_build(key: BuildKey, build: Callable[[Path], None]) -> Path:
    """The cached file for `key`; on a miss, `build(tmp_path)` writes it and it is moved in.

    `build` must write a file (or a package directory) at exactly the path it is given.
    """
    final = built_path(key)
    if final.exists():
        if _intact(final):
            return final
        _remove(final)  # damaged since it was built: built again below
    final.parent.mkdir(parents=True, exist_ok=True)
    with _temp_sibling(final) as tmp:
        try:
            build(tmp)
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"building {key.fmt} ({key.precision}) failed: {e}",
                             key.model.path) from e
        # The size first: a process that finds the entry finds its size with it.
        _write_seal(final, _size(tmp))
        try:
            os.replace(tmp, final)
        except OSError:
            # A directory cannot replace a non-empty directory: another process finished the
            # same build first, and its result is as good as ours.
            if not final.exists():
                raise
    _remove_earlier_versions(final)
    return final


def _seal(final: Path) -> Path:
    return final.with_name(f".{final.name}.size")


def _size(path: Path) -> int:
    """A built file's bytes, or a package folder's files' together."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _write_seal(final: Path, size: int) -> None:
    tmp = final.with_name(f".{final.name}.size.{os.getpid()}")
    tmp.write_text(str(size), encoding="ascii")
    os.replace(tmp, _seal(final))


def _intact(final: Path) -> bool:
    """Whether `final` is as big as it was built (a cache of a version before 0.2.16 kept no
    size: such an entry is built again once)."""
    try:
        return int(_seal(final).read_text(encoding="ascii")) == _size(final)
    except (OSError, ValueError):
        return False


def _remove_earlier_versions(final: Path) -> None:
    """Remove what other versions of this package built for the key of `final`. The version is in
    every key, so each upgrade builds anew, and the old builds stayed for good: five copies of a
    model after five upgrades, tens of MB each for Core ML packages of the x4plus models."""
    ext = final.suffix
    prefix = final.name[: -len(f"{__version__}{ext}")]  # NAME-PRECISION-SHAPE-SOURCE-v
    for path in final.parent.iterdir():
        version = path.name[len(prefix): -len(ext)]
        if (path != final and path.name.startswith(prefix) and path.name.endswith(ext)
                and _VERSION.fullmatch(version)):
            _remove(path)
            _seal(path).unlink(missing_ok=True)


@contextlib.contextmanager
def _temp_sibling(final: Path) -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield workdir / final.name
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def cached_builds(model: ModelRef) -> list[Path]:
    """Built files of this model already in the cache (any format, precision or shape)."""
    root = cache_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(f"{model.name}-")
                  and _AFTER_NAME.fullmatch(p.name, len(model.name)))


def clear(remove: Callable[[Path], None] = _remove) -> int:
    """Empty the cache; how many built models it held (what ffmpeg said of itself, also kept
    there, goes too, uncounted)."""
    root = cache_dir()
    entries = list(root.iterdir()) if root.is_dir() else []
    for entry in entries:
        remove(entry)
    # Neither what ffmpeg said of itself nor the hidden sizes of the builds are builds.
    return sum(entry.name != FFMPEG_FACTS and not entry.name.startswith(".")
               for entry in entries)
