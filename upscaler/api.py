"""The Python API: an upscaler for pictures in memory, and one call that runs a job on paths.

    import upscaler

    with upscaler.Upscaler(model="realesr-animevideov3") as up:
        big = up.upscale(PIL.Image.open("cel.png"))        # a PIL image in, the same mode out
        arr = up.upscale(numpy_array)                        # (H, W[, C]) uint8/uint16 in and out
        for big in up.upscale_frames(arrays): ...           # a sequence: held drawings reused

    upscaler.upscale_path("episode.mkv", "out/", codec="libx265")   # what `upscale` does
    found = upscaler.compare("episode.mkv", at=["1:30"])               # `upscale compare`'s data
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
import PIL.Image

from upscaler.comparison import Comparison
from upscaler.comparison import compare as _compare
from upscaler.config import Job, Options, names_folder, option_fields, validate_options
from upscaler.errors import ArgumentTypeError, UpscalerError, UsageError, ran_out
from upscaler.media.images import Image
from upscaler.pipeline import Progress, ProgressCallback, run_job
from upscaler.pipeline import Upscaler as _Pipeline

_Picture = TypeVar("_Picture", PIL.Image.Image, np.ndarray)

# PIL modes stored as they are; the others go through a mode the model path handles and back.
_DIRECT_MODES = frozenset({"L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N"})
# 16-bit modes and their byte order: the result is made in the source's own.
_16BIT = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2"}
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "True or False"}
_VIA_MODE = {"1": "L", "P": "RGBA", "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB",
             "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "I": "I;16"}


def _options(**given: Any) -> Options:
    kinds = {f.name: f.kind for f in option_fields()}
    unknown = sorted(set(given) - set(kinds))
    if unknown:
        raise ArgumentTypeError(f"unknown option(s): {', '.join(unknown)}")
    for name, value in given.items():
        if isinstance(value, os.PathLike) and kinds[name] is str:
            given[name] = value = os.fspath(value)
        if isinstance(value, np.generic):
            # A tile computed with numpy (np.int64(16)) is the number it holds.
            given[name] = value = value.item()
        if value is not None and not _is_kind(value, kinds[name]):
            raise ArgumentTypeError(f"{name} must be {_KIND_NAMES[kinds[name]]}, "
                                    f"not {type(value).__name__}")
    options = dataclasses.replace(Options(), **{k: v for k, v in given.items() if v is not None})
    try:
        validate_options(options)
    except ValueError as e:
        raise UsageError(str(e)) from e
    return options


def _is_kind(value: object, kind: type) -> bool:
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


class Upscaler:
    """A model loaded on an executor, for pictures in memory. Use it as a context manager.

    model: a name from `upscale models` or a model file (default: realesrgan-x4plus-anime);
    executor: "auto" or a name (coreml, openvino, onnxruntime, ncnn, torch); tile: input tile
    size, 0 for whole pictures, None for the executor's default. Other keywords are the options
    of the `upscale` command (precision, device, threads, overlap, batch, scale).

    `upscale(x)` takes a PIL image in any mode the `upscale` command reads (RGB, RGBA, L, LA,
    1, P, PA, I;16 in any byte order, I, CMYK, YCbCr...) and returns a PIL image of the same
    mode, or takes a numpy array (H, W) or (H, W, C) with C = 1-4 channels in RGB(A) order,
    uint8 or uint16, and returns the same shape layout and dtype. The result is `scale` times
    larger (the model's scale by default).

    A wrong argument raises an UpscalerError (exit_code 2) that is also a TypeError (a wrong
    type, an unknown option) or a ValueError (a wrong value).
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, executor: str = "auto",
                 tile: int | None = None, **options: Any) -> None:
        given = {"model": model, "executor": executor, "tile": tile, **options}
        options_ = _options(**given)
        self._pipeline = _Pipeline(options_, reuse=options_.reuse)
        self._closed = False
        # Model calls under way, by thread, which close() waits for: the executor's buffers
        # must not be freed under a call another thread is making.
        self._callers: collections.Counter[int] = collections.Counter()
        self._idle = threading.Condition()

    @property
    def scale(self) -> float:
        return self._pipeline.options.scale or self._pipeline.model_scale

    def close(self) -> None:
        """Free the model; waits for the model calls other threads are making (in `upscale`
        and `upscale_frames`) to end. From inside a call of its own thread (a signal handler,
        the frames it is given) it cannot wait for that one, and does not."""
        me = threading.get_ident()
        with self._idle:
            self._closed = True
            self._idle.wait_for(lambda: self._callers.total() == self._callers[me])
        self._pipeline.close()

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """A model call under way on this thread, which close() waits for."""
        me = threading.get_ident()
        with self._idle:
            self._check_open()
            self._callers[me] += 1
        try:
            yield
        finally:
            with self._idle:
                self._callers[me] -= 1
                if not self._callers[me]:
                    del self._callers[me]
                self._idle.notify_all()

    def __enter__(self) -> Upscaler:
        self._check_open()
        return self

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this Upscaler is closed; make another to upscale more")

    def __exit__(self, *exc: object) -> None:
        self.close()

    @overload
    def upscale(self, picture: PIL.Image.Image) -> PIL.Image.Image: ...

    @overload
    def upscale(self, picture: np.ndarray) -> np.ndarray: ...

    def upscale(self, picture: _Picture) -> _Picture:
        with self._call(), self._calling():
            if isinstance(picture, PIL.Image.Image):
                return self._upscale_pil(picture)
            if isinstance(picture, np.ndarray):
                return self._upscale_array(picture)
        raise ArgumentTypeError(f"expected a PIL image or a numpy array, not "
                                f"{type(picture).__name__}")

    @contextlib.contextmanager
    def _calling(self, theirs: Sequence[BaseException] = ()) -> Iterator[None]:
        """What goes wrong in a call as our errors: closed while this one was upscaling (the
        executor's request gone under it: an AttributeError from inside OpenVINO, a
        RuntimeError from ONNX Runtime) as the UsageError a closed Upscaler gives; running out
        of memory as an OutOfMemoryError (exit 4), as the command says it. What the caller's
        own frames raised (`theirs`) goes on as it is."""
        try:
            yield
        except UpscalerError:
            raise
        except Exception as e:
            if any(e is mine for mine in theirs):
                raise
            self._check_open()
            memory = ran_out(e, None)
            if memory is not None:
                raise memory from e
            raise

    def upscale_frames(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The frames of an animation or video, numpy arrays as `upscale` takes them, upscaled
        in order. Unless the upscaler was made with reuse=False, each frame is compared with
        those before it: where a held drawing did not change its stored result is reused, and
        where part of it changed only that part goes through the model (within 45 dB of
        upscaling every frame alone). Nothing is carried between two calls."""
        self._check_open()
        # Per frame given: its dtype (uint16 in either byte order, given back so) and whether
        # it was (H, W), to be given back without the channel axis.
        given: list[tuple[np.dtype, bool]] = []

        theirs: list[BaseException] = []  # what `frames` itself raised, passed on as it is

        def checked() -> Iterator[np.ndarray]:
            source = iter(frames)
            while True:
                try:
                    array = next(source)
                except StopIteration:
                    return
                except BaseException as e:
                    theirs.append(e)
                    raise
                _check_dtype(array)
                given.append((array.dtype, array.ndim == 2))
                yield _picture_array(array[..., None] if array.ndim == 2 else array)

        pipeline = self._pipeline.upscale_frames(checked())
        try:
            for n in itertools.count():
                # Each frame's model work is a call close() waits for; the time this
                # generator waits for its caller is not.
                with self._call(), self._calling(theirs):
                    upscaled = next(pipeline, None)
                if upscaled is None:
                    return
                dtype, flat = given[n]
                yield (upscaled[..., 0] if flat else upscaled).astype(dtype, copy=False)
        finally:
            pipeline.close()

    def _upscale_array(self, array: np.ndarray) -> np.ndarray:
        _check_dtype(array)
        if not array.dtype.isnative:  # big-endian uint16: worked on in this machine's order
            return self._upscale_array(array.astype(array.dtype.newbyteorder("="))).astype(
                array.dtype)
        if array.ndim == 2:
            return self._upscale_array(array[..., None])[..., 0]
        if array.ndim != 3 or not 1 <= array.shape[2] <= 4 or min(array.shape[:2]) < 1:
            raise UsageError(f"arrays must be (H, W) or (H, W, 1-4), not {array.shape}")
        image = Image(pixels=np.ascontiguousarray(array))
        return self._pipeline.upscale_image(image).pixels

    def _upscale_pil(self, picture: PIL.Image.Image) -> PIL.Image.Image:
        mode = picture.mode
        if mode in _DIRECT_MODES:
            return _with_info(self._pil_direct(picture), picture)
        if mode not in _VIA_MODE:
            raise UsageError(f"PIL mode {mode!r} is not supported")
        if mode == "P" and "transparency" not in picture.info:
            big = self._pil_direct(picture.convert("RGB"))
        elif mode == "I":
            values = np.asarray(picture)
            if values.min() < 0 or values.max() > 65535:
                raise UsageError("mode 'I' pictures must hold values in 0..65535")
            big = self._pil_direct(PIL.Image.fromarray(values.astype(np.uint16)))
        else:
            big = self._pil_direct(picture.convert(_VIA_MODE[mode]))
        return _with_info(_back_to(big, picture), picture)

    def _pil_direct(self, picture: PIL.Image.Image) -> PIL.Image.Image:
        pixels = self._upscale_array(np.asarray(picture))
        if picture.mode in _16BIT:
            # fromarray would give I;16 for every byte order; the caller's mode comes back.
            data = pixels.astype(_16BIT[picture.mode]).tobytes()
            return PIL.Image.frombytes(picture.mode, pixels.shape[1::-1], data)
        return PIL.Image.fromarray(pixels)


def _check_dtype(array: object) -> None:
    """ArgumentTypeError unless `array` is a numpy array of uint8 or uint16 (either order)."""
    if not isinstance(array, np.ndarray):
        raise ArgumentTypeError(f"expected a numpy array, not {type(array).__name__}")
    if array.dtype.kind != "u" or array.dtype.itemsize not in (1, 2):
        raise ArgumentTypeError(f"arrays must be uint8 or uint16, not {array.dtype}")


def _picture_array(array: np.ndarray) -> np.ndarray:
    """A frame as the pipeline takes it, (H, W, C) contiguous in this machine's byte order;
    UsageError when its shape is none."""
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4 or min(array.shape[:2]) < 1:
        raise UsageError(f"arrays must be (H, W) or (H, W, 1-4), not {array.shape}")
    return np.ascontiguousarray(array, array.dtype.newbyteorder("="))


def _back_to(big: PIL.Image.Image, source: PIL.Image.Image) -> PIL.Image.Image:
    """`big` converted to `source`'s mode, its palette and transparent index included."""
    mode = source.mode
    if mode == "1":
        return big.point(lambda v: 255 if v >= 128 else 0).convert("1", dither=PIL.Image.NONE)
    if mode == "I":
        return big.convert("I")
    if mode in ("P", "PA"):
        # Back onto the source's own palette, so indices keep their meaning.
        rgb = big.convert("RGB").quantize(palette=source.convert("P") if mode == "PA" else source,
                                          dither=PIL.Image.Dither.NONE)
        if mode == "PA":  # indices on the palette, and the alpha band as it came out
            out = rgb.convert("PA")
            out.putalpha(big.getchannel("A"))
            return out
        index = source.info.get("transparency")
        if isinstance(index, int) and big.mode == "RGBA":
            values = np.array(rgb)
            values[np.asarray(big)[..., 3] < 128] = index
            out = PIL.Image.fromarray(values, "P")
            out.putpalette(rgb.getpalette() or [])
            return out
        return rgb
    return big.convert(mode)


def _with_info(big: PIL.Image.Image, source: PIL.Image.Image) -> PIL.Image.Image:
    # The ICC profile, DPI and the palette's transparent index describe the result too.
    big.info.update({k: v for k, v in source.info.items()
                     if k in ("icc_profile", "dpi", "transparency", "gamma")})
    return big


def upscale_path(input: str | os.PathLike[str], output: str | os.PathLike[str] | None = None,
                 *, progress: ProgressCallback | None = None, **options: Any) -> Progress:
    """Upscale an image, a folder of images or a video on disk, as the `upscale` command does.

    `output` follows the command's rules (a trailing slash means a folder; None puts the result
    beside the input); `options` are the command's options by their Python names
    (model="realesr-animevideov3", format="webp", overwrite=True, crf=18...). Returns the
    job's counters; raises UpscalerError (with `exit_code`) on any problem, before any work
    when the problem can be seen up front.
    """
    if output is not None:
        _path(output, "output")
    typed = os.fsdecode(output) if output is not None else ""  # as typed: "out/" is a folder
    job = Job(_path(input, "input"), Path(typed) if typed else None, _options(**options),
              output_is_folder=names_folder(typed))
    return run_job(job, _callback(progress)) if progress is not None else run_job(job)


def _path(value: object, name: str) -> Path:
    """`value` as a path (str, bytes or os.PathLike); ArgumentTypeError naming `name` for
    anything else, as a wrong option's type gives."""
    if not isinstance(value, str | bytes | os.PathLike):
        raise ArgumentTypeError(f"{name} must be a path (str or os.PathLike), not "
                                f"{type(value).__name__}")
    return Path(os.fsdecode(value))


def _callback(progress: object) -> ProgressCallback:
    """`progress`, checked up front: a value that cannot be called failed at the first report,
    with Python's TypeError."""
    if not callable(progress):
        raise ArgumentTypeError(f"progress must be callable, not {type(progress).__name__}")
    return progress  # type: ignore[return-value]


def compare(input: str | os.PathLike[str], models: Sequence[str | os.PathLike[str]] | None = None,
            at: Sequence[str | float] = (), *, progress: ProgressCallback | None = None,
            **options: Any) -> Comparison:
    """What `upscale compare` shows, as data: a few frames of a video (at the `at` times, in
    seconds or "MM:SS"), a folder or an image, each model's outputs of them (numpy arrays),
    its seconds per frame, and its estimates for the whole input (time, output size).

    `models` defaults to the video and image defaults and one model of every other family
    installed; `options` are the `upscale` command's (tile=0, executor="onnxruntime"...).
    """
    if isinstance(models, str | os.PathLike):
        models = [models]  # one name, not its letters
    names = [os.fspath(_path(m, "each of models")) for m in models] if models is not None else None
    if names == []:
        raise UsageError("models names no model (None gives the defaults)")
    if isinstance(at, str | int | float | np.generic):
        at = [at]  # one time, not its characters ("1.5" was 1, ".", 5)
    times = []
    for time in at:
        time = time.item() if isinstance(time, np.generic) else time
        if isinstance(time, bool) or not isinstance(time, str | int | float):
            raise ArgumentTypeError(f"each of at must be seconds or a time string, not "
                                    f"{type(time).__name__}")
        times.append(str(time))
    return _compare(_path(input, "input"), names, times, _options(**options),
                    _callback(progress) if progress is not None else None)

