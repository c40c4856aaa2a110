"""The plan of a batch: every job made concrete (what it reads, what it writes) and checked.

All mistakes of a whole batch are found here, before the first frame of the first job is
upscaled: inputs that are missing or unreadable, outputs that are folders, inputs, another job's
output or in places that cannot be written, models and executors that do not resolve. Each is
reported with the job file's line where the job came from one, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from upscaler.config import Job, Options
from upscaler.errors import (
    ExecutorError,
    MediaError,
    PlanError,
    UpscalerError,
    UsageError,
    job_error,
)
from upscaler.executors.base import ExecutorOptions
from upscaler.executors.registry import (
    AUTO,
    KINDS,
    canonical_name,
    model_unavailable_reason,
    resolve_auto,
)
from upscaler.media.images import is_image_path
from upscaler.models.registry import MediaKind, model_for, resolve_model
from upscaler.names import NAME_MAX, name_bytes
from upscaler.outputs import (
    folder_item_output,
    folder_output,
    image_output,
    is_video_path,
    video_output,
)
from upscaler.video import VideoSettings, check_video_job

TaskKind = Literal["image", "folder", "video"]


@dataclass(frozen=True)
class Task:
    """One job made concrete.

    For a folder, `items` pairs each image with its output and `notes` says what was passed over
    and why (videos, other files). Whether an output already exists is decided when the task
    runs, so a rerun skips what an earlier run finished.
    """

    kind: TaskKind
    input: Path
    output: Path
    options: Options
    items: tuple[tuple[Path, Path], ...] = ()
    notes: tuple[str, ...] = ()
    where: tuple[Path, int] | None = None  # the job file and line it came from (Job.where)

    @property
    def media(self) -> MediaKind:
        """What the model works on: a video's frames, or images (also a folder's)."""
        return "video" if self.kind == "video" else "image"

    @property
    def outputs(self) -> tuple[Path, ...]:
        return tuple(out for _, out in self.items) if self.kind == "folder" else (self.output,)


def plan_jobs(jobs: Sequence[Job]) -> list[Task]:
    """The tasks of `jobs`, in order; PlanError listing every mistake, in job order, if any."""
    errors: list[tuple[int, UpscalerError]] = []
    planned: list[tuple[int, Task]] = []
    runtimes: dict[tuple[str | None, str, str | None], UpscalerError | None] = {}
    for n, job in enumerate(jobs):
        try:
            task = _plan(job)
            model = model_for(task.options.model, task.media)
            key = (model, task.options.executor, task.options.device)
            if key not in runtimes:
                runtimes[key] = _runtime_problem(task.options, model)
            problem = runtimes[key]
            if problem is not None:
                raise problem
            planned.append((n, dataclasses.replace(task, where=job.where)))
        except Exception as e:
            # Running out here (a thread of the encoder probes that could not start, under
            # `ulimit -v`) is this job's error too, naming its file.
            error = job_error(e, job.input)
            if error is None:
                raise
            errors.append((n, error))
    errors += _clashes(planned)
    if errors:
        errors.sort(key=lambda item: item[0])
        raise PlanError([_located(e, jobs[n]) for n, e in errors])
    return [task for _, task in planned]


def _located(error: UpscalerError, job: Job) -> UpscalerError:
    """`error` with the job file's line in front, when the job came from a file."""
    return error if job.where is None else error.located(*job.where)


def _plan(job: Job) -> Task:
    src = job.input.expanduser()
    out = job.output.expanduser() if job.output is not None else None
    if out is not None:
        check_name_length(out, "-o")  # before asking the file system anything of it
    options = job.options
    _check_readable(src)
    if src.is_dir():
        return _plan_folder(src, out, options)
    if is_video_path(src):
        kind: TaskKind = "video"
        dst = video_output(src, out, job.output_is_folder, options)
    elif is_image_path(src):
        kind = "image"
        dst = image_output(src, out, job.output_is_folder, options)
    else:
        raise MediaError("not an image, video or folder that we read (judged by its extension)",
                         src)
    if _same_file(src, dst):
        raise UsageError("the output would overwrite the input", dst)
    check_name_length(dst)
    if dst.is_dir():
        raise UsageError("the output is a folder", dst)
    check_writable(dst.parent)
    if kind == "video" and (options.overwrite or not dst.exists()):
        # A finished job is skipped when it runs. Its checks (a probe and ffmpeg's trials, a
        # second for a captioned TS) would only slow the rerun of a season's batch, and
        # refuse it where the first run's encoder is not on this machine.
        check_video_job(src, dst, video_settings(options))
    return Task(kind, src, dst, options)


def video_settings(options: Options) -> VideoSettings:
    """The video layer's settings for a job's options."""
    return VideoSettings(codec=options.codec, crf=options.crf, preset=options.preset,
                         pix_fmt=options.pix_fmt, segment_seconds=options.segment_seconds,
                         overwrite=options.overwrite, resume=options.resume,
                         accept_damage=options.accept_damage,
                         deinterlace=options.deinterlace,
                         work_dir=Path(options.work_dir).expanduser() if options.work_dir
                         else None)


def _plan_folder(src: Path, out: Path | None, options: Options) -> Task:
    dst = folder_output(src, out, options)
    if dst.exists() and not dst.is_dir():
        raise UsageError("the output of a folder must be a folder, and this is a file", dst)
    if _same_file(dst, src):  # `--suffix ''`, or -o naming the folder itself
        raise UsageError("the output folder would be the input folder, whose pictures it "
                         "would overwrite", dst)
    if _inside(dst, src):
        raise UsageError(f"the output folder must not be inside the input folder {src}", dst)
    images, videos, others, hidden = sort_folder(src, dst)
    notes = []
    if videos:
        notes.append(f"{src}: skipped {_count(videos, 'video')} ({_names(videos)}): a folder job "
                     "takes images; give each video as its own input or job")
    if others:
        notes.append(f"{src}: skipped {_count(others, 'other file')} ({_names(others)}): "
                     "not images we read")
    if hidden:
        folders = [p for p in hidden if p.is_dir()]
        counts = [_count(kind, noun) for kind, noun in
                  (([p for p in hidden if p not in folders], "hidden file"),
                   (folders, "hidden folder")) if kind]
        notes.append(f"{src}: skipped {' and '.join(counts)} ({_names(hidden)}): names that "
                     "start with a dot")
    if not images:
        reason = "; ".join(n.split(": ", 1)[1] for n in notes) or "it is empty"
        raise MediaError(f"no images to upscale in this folder ({reason})", src)
    items, by_output = [], {}
    clashes: list[str] = []  # every pair, so that one run names them all
    for image in images:
        target = folder_item_output(image, src, dst, options)
        key = _path_key(target)
        if key in by_output:
            clashes.append(f"{by_output[key].relative_to(src)} and {image.relative_to(src)} "
                           f"would both be written to {target}")
            continue
        by_output[key] = image
        items.append((image, target))
    if clashes:
        rest = len(clashes) - 3
        more = f"; and {rest} more such pair{'s' * (rest != 1)}" if rest > 0 else ""
        which = "one of each" if len(clashes) > 1 else "one"
        raise UsageError(f"{'; '.join(clashes[:3])}{more}; rename {which}, or leave out "
                         "--format", src)
    for image, target in items:
        check_name_length(target)
        if target.is_dir():  # else counted as an output that exists, and skipped
            raise UsageError(f"the output of {image.relative_to(src)} is a folder", target)
    check_writable(dst)
    return Task("folder", src, dst, options, tuple(items), tuple(notes))


def check_name_length(dst: Path, remedy: str = "-o or --suffix") -> None:
    """UsageError before any work where a name in the output's path is longer than a file
    system takes: the input's name and the suffix (`_upscaled`) together, say; it failed when
    written, after the model had run (or at once with a traceback, for a folder's name).
    `remedy`: the options that name it otherwise."""
    for part in reversed(dst.parts):
        size = name_bytes(part)
        if size > NAME_MAX:
            what = "name" if part == dst.name else f"folder {part[:20]}...'s name"
            raise UsageError(f"the output's {what} would be {size} bytes, more than a file "
                             f"system takes ({NAME_MAX}); give a shorter one with {remedy}",
                             dst)


def sort_folder(src: Path, output: Path | None = None,
                ) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """A folder's (images, videos, other files, hidden files and folders), each in a stable
    order: what a folder job takes (its images) and what it skips. Linked folders are
    followed (`output`, the job's output folder, never)."""
    images: list[Path] = []
    videos: list[Path] = []
    others: list[Path] = []
    hidden: list[Path] = []
    for path in _walk(src, output):
        if path.name.startswith("."):
            hidden.append(path)
        elif is_image_path(path):
            images.append(path)
        elif is_video_path(path):
            videos.append(path)
        else:
            others.append(path)
    return images, videos, others, hidden


def _walk(root: Path, output: Path | None = None) -> Iterator[Path]:
    """Every file below `root` in a stable order; hidden files and folders (names starting
    with a dot) are given but not entered, for the caller to count.

    A link to a folder (a season kept on another disk, linked into the library) is entered
    like a folder, unless what it leads to is walked anyway or would be walked again: a folder
    inside `root` (its pictures come by their own path), one that holds `root` or the folder
    the link is in (a loop). Each folder is entered once, by the first path the walk finds
    to it (a link to a season, and a link to the disk that holds it). `output` is never
    entered, wherever a link puts it."""
    top = Path(os.path.realpath(root))
    skip = {Path(os.path.realpath(output))} if output is not None else set()
    entered = {top}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        hidden = [d for d in dirnames if d.startswith(".")]
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            real = Path(os.path.realpath(os.path.join(dirpath, name)))
            if real in skip:
                continue
            if os.path.islink(os.path.join(dirpath, name)) and (
                    real.is_relative_to(top) or top.is_relative_to(real)
                    or Path(os.path.realpath(dirpath)).is_relative_to(real)):
                continue
            # Also a real folder: inside a linked one, it may have come by a link already.
            if real in entered:
                continue
            entered.add(real)
            kept.append(name)
        dirnames[:] = kept
        for name in sorted([*filenames, *hidden]):
            yield Path(dirpath) / name


def _count(paths: list[Path], noun: str) -> str:
    return f"{len(paths)} {noun}{'s' if len(paths) != 1 else ''}"


def _names(paths: list[Path], most: int = 3) -> str:
    shown = ", ".join(p.name for p in paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _check_readable(src: Path) -> None:
    if not src.exists():
        raise MediaError("input does not exist", src)
    try:
        if src.is_dir():
            with os.scandir(src) as entries:
                next(entries, None)
        else:
            with open(src, "rb") as f:
                f.read(1)
    except OSError as e:
        raise MediaError(f"cannot read: {e.strerror or e}", src) from e


def check_writable(folder: Path) -> None:
    """Unless files can be made in `folder` (created later if missing): UsageError when a
    file stands where a folder must be, MediaError when the folder cannot be written.

    The nearest folder that exists is asked for real, by making and removing an empty file
    there: permission bits do not tell the whole story (read-only mounts, /proc, root).
    """
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot make folder {folder}: {existing} is a file", folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".upscale-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        # The place is right but the disk says no (permissions, a read-only mount): media.
        raise MediaError(f"cannot write in {existing}: {e.strerror or e}", folder) from e


# A model file's kind as a user knows it, for "executor X cannot load ...".
_KIND_NAMES = {"ncnn": "ncnn files", "onnx": "an ONNX model", "pth": "a PyTorch model",
               "mlpackage": "a Core ML package"}


def _runtime_problem(options: Options, model_name: str) -> UpscalerError | None:
    """Why `model_name` or the executor of `options` cannot run here, without loading the
    model."""
    try:
        model = resolve_model(model_name)
        name = canonical_name(options.executor)
        if name == AUTO:
            resolve_auto(model, ExecutorOptions(device=options.device))
            return None
        reason = model_unavailable_reason(name, model)
        if reason is not None:
            return ExecutorError(f"executor {name} cannot run here: {reason}")
        if model.kind not in KINDS[name]:
            able = ", ".join(e for e, kinds in KINDS.items() if model.kind in kinds)
            return ExecutorError(f"executor {name} cannot load {_KIND_NAMES[model.kind]}; "
                                 f"{able} can (or --executor auto)", model.path)
    except UpscalerError as e:
        return e
    return None


def _clashes(planned: list[tuple[int, Task]]) -> Iterator[tuple[int, UpscalerError]]:
    """Outputs that another job also writes, or that another job reads; output folders that
    two folder jobs would mix their pictures in (two `season` folders into `-o out/`), or
    that another job writes a file as."""
    inputs = {_path_key(task.input) for _, task in planned}
    # The same files by what they are, for outputs that reach them another way (a bind mount).
    input_ids = {found for _, task in planned if (found := _file_id(task.input))}
    folders: dict[str, Path] = {}
    for n, task in planned:
        if task.kind != "folder":
            continue
        key = _path_key(task.output)
        if key in folders:
            yield n, UsageError(f"is the output folder of two jobs (also of {folders[key]}), "
                                "whose pictures would mix; give each its own -o", task.output)
        else:
            folders[key] = task.input
    # A folder job reads whatever its folder holds when it runs: another job's output in it
    # would be upscaled again (16x) on one run and not on another.
    read_folders = [(i, Path(_path_key(task.input)), task.input) for i, task in planned
                    if task.kind == "folder"]
    folder_ids = {found: (i, src) for i, _, src in read_folders if (found := _file_id(src))}
    holders: dict[Path, tuple[int, Path] | None] = {}  # a folder -> the read folder it is in

    def read_folder_holding(out: Path) -> tuple[int, Path] | None:
        """The job and input folder that `out`'s folder is, or lies in, by what the folders
        on its way are."""
        parent = out.parent
        if parent not in holders:
            holders[parent] = next((folder_ids[found] for found in _ids_on_the_way(parent)
                                    if found in folder_ids), None)
        return holders[parent]

    written: dict[str, Path] = {}
    for n, task in planned:
        if task.kind != "folder" and _path_key(task.output) in folders:
            yield n, UsageError(f"is the output folder of {folders[_path_key(task.output)]} "
                                f"and the output of {task.input}", task.output)
            continue
        for out in task.outputs:
            key = _path_key(out)
            inside = next((src for i, folder, src in read_folders
                           if i != n and Path(key).is_relative_to(folder)), None)
            if inside is None and folder_ids and (held := read_folder_holding(out)):
                inside = held[1] if held[0] != n else None
            if not is_image_path(out):  # a folder job takes only the images it holds
                inside = None
            if inside is not None:
                yield n, UsageError(f"is inside the input folder of another job ({inside}), "
                                    "which would upscale it again", out)
                break
            if key in inputs or (input_ids and _file_id(out) in input_ids):
                yield n, UsageError("is the input of another job", out)
            elif key in written:
                yield n, UsageError(f"is written by two jobs (also from {written[key]})", out)
            else:
                written[key] = task.input


def _file_id(path: Path) -> tuple[int, int] | None:
    """What file `path` is (device and inode), None where there is none (yet)."""
    try:
        found = os.stat(path.expanduser())
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _path_key(path: Path) -> str:
    # Case-insensitive file systems (macOS, Windows) make pic.PNG and pic.png one file.
    key = str(path.expanduser().resolve())
    return key if os.name == "posix" and os.uname().sysname == "Linux" else key.casefold()


def _ids_on_the_way(path: Path) -> Iterator[tuple[int, int]]:
    """What `path` (where it exists) and each folder above it are (_file_id)."""
    for above in (path, *path.expanduser().resolve().parents):
        if (found := _file_id(above)) is not None:
            yield found


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one file: one path, or two ways to it that the path alone does
    not show (a bind mount, a network share of a local folder, a hard link). One that does
    not exist (yet) cannot be the other."""
    found = _file_id(a)
    return _path_key(a) == _path_key(b) or (found is not None and found == _file_id(b))


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` (which may not exist yet) is `folder` or lies under it, by its path or by
    a folder on its way that is `folder` reached another way (a bind mount)."""
    if path.resolve().is_relative_to(folder.resolve()):
        return True
    found = _file_id(folder)
    return found is not None and found in _ids_on_the_way(path)
