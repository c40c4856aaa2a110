"""The `upscale` command: arguments, progress bars, one-line errors and exit codes.

    upscale video.mp4 -o out.mp4
    upscale dir/ --format png
    upscale --config configs/job.yaml
    upscale models
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from upscaler.config import Job, Options, load_jobs, option_fields, validate_options
from upscaler.errors import UpscalerError, UsageError
from upscaler.pipeline import Progress, run_job

PROG = "upscale"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Upscale anime images, folders of images and videos with Real-ESRGAN.",
        epilog="`upscale models` lists the models and their built files.",
    )
    parser.add_argument("input", nargs="?", type=Path, help="image, folder or video")
    parser.add_argument("-o", "--output", type=Path, help="output file or folder")
    parser.add_argument("--config", type=Path, help="YAML file with a list of jobs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    for f in option_fields():
        if f.kind is bool:
            action = "store_false" if f.flag.startswith("--no-") else "store_true"
            parser.add_argument(f.flag, dest=f.name, action=action, default=None, help=f.help)
        else:
            parser.add_argument(f.flag, type=f.kind, default=None, help=f.help,
                                metavar=f.name.upper())
    return parser


def _models_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{PROG} models",
                                     description="List the models and their built files.")
    parser.add_argument("--clear-cache", action="store_true", help="delete every built model")
    return parser


def _given_options(args: argparse.Namespace) -> dict[str, object]:
    return {f.name: getattr(args, f.name) for f in option_fields()
            if getattr(args, f.name) is not None}


class _Bars:
    """Draws tqdm bars from the pipeline's progress callbacks."""

    def __init__(self, quiet: bool, jobs: int) -> None:
        self.quiet = quiet
        self.outer = None if quiet or jobs < 2 else tqdm(total=jobs, unit="job", position=0)
        self.inner: tqdm | None = None

    def __call__(self, state: Progress) -> None:
        if self.quiet:
            return
        if self.inner is None:
            self.inner = tqdm(total=state.total or None, unit=state.unit, desc=state.label,
                              initial=0, position=1 if self.outer else 0,
                              leave=self.outer is None, dynamic_ncols=True)
        if state.total and self.inner.total != state.total:
            self.inner.total = state.total
        self.inner.update(state.done - self.inner.n)

    def job_done(self, state: Progress) -> None:
        if self.inner is not None:
            self.inner.close()
            self.inner = None
        if self.outer is not None:
            self.outer.update(1)
        for failure in state.failures:
            tqdm.write(f"{PROG}: error: {failure}", file=sys.stderr)
        if not self.quiet and state.skipped:
            tqdm.write(f"{state.label}: skipped {state.skipped} existing output(s) "
                       "(--overwrite to redo them)")

    def close(self) -> None:
        if self.outer is not None:
            self.outer.close()


def _list_models(argv: Sequence[str]) -> int:
    from upscaler.models import cache
    from upscaler.models.registry import DEFAULT_MODELS, MODELS, resolve_model

    args = _models_parser().parse_args(argv)
    if args.clear_cache:
        print(f"removed {cache.clear()} built model(s) from {cache.cache_dir()}")
        return 0
    print(f"built models are cached in {cache.cache_dir()}")
    for name, spec in MODELS.items():
        ref = resolve_model(name)
        kinds = [kind for kind, default in DEFAULT_MODELS.items() if default == name]
        mark = f" (default for {' and '.join(k + 's' for k in kinds)})" if kinds else ""
        print(f"{name}{mark}  x{spec.scale}  {spec.description}")
        print(f"    source: {ref.path}")
        for built in cache.cached_builds(ref):
            print(f"    built:  {built}")
    return 0


def _jobs(args: argparse.Namespace) -> list[Job]:
    given = _given_options(args)
    if args.config is not None:
        if args.input is not None or args.output is not None:
            raise UsageError("give either --config or an input, not both")
        # Command-line options act as defaults under the file's own.
        return load_jobs(args.config, dataclasses.replace(Options(), **given))
    if args.input is None:
        raise UsageError("no input given (an image, a folder or a video; or --config FILE)")
    options = dataclasses.replace(Options(), **given)
    try:
        validate_options(options)
    except ValueError as e:
        raise UsageError(str(e)) from e
    return [Job(args.input, args.output, options)]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["models"]:
            return _list_models(argv[1:])
        args = _parser().parse_args(argv)
        jobs = _jobs(args)
        bars = _Bars(args.quiet, len(jobs))
        failures: list[UpscalerError] = []
        try:
            for job in jobs:
                state = run_job(job, bars)
                bars.job_done(state)
                failures += state.failures
        finally:
            bars.close()
        if failures:
            print(f"{PROG}: {len(failures)} input(s) failed, see above", file=sys.stderr)
            return max(f.exit_code for f in failures)
    except UpscalerError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
