"""What a user meets when something is wrong: one table of exit codes for the command, job files
and the API; one-line errors with no traceback and nothing printed before them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_python
from draw import draw_cel
from PIL import Image

import upscaler
from upscaler.cli import main
from upscaler.errors import EXIT_CODES

MODEL = "realesr-animevideov3"
FAST = ["--model", MODEL, "--quiet"]


def upscale(*args: str, cwd: Path | None = None, prelude: str = "",
            ) -> subprocess.CompletedProcess[str]:
    """`upscale ARGS` in a fresh process (after `prelude`, Python run before the command)."""
    code = f"import sys\n{prelude}\nfrom upscaler.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line on stderr, checked to be the only one and no traceback."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def up() -> upscaler.Upscaler:
    with upscaler.Upscaler(model=MODEL) as instance:
        yield instance


@pytest.fixture
def still(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray(draw_cel(12, 16)).save(path)
    return path


def test_the_exit_code_table_is_in_help_and_docs() -> None:
    shown = subprocess.run([sys.executable, "-m", "upscaler", "--help"], capture_output=True,
                           text=True, cwd=ROOT, check=True).stdout
    help_text = " ".join(shown.split())  # argparse wraps the lines
    page = (ROOT / "docs" / "exit-codes.md").read_text(encoding="utf-8")
    section = page.split("# Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", section, re.MULTILINE)
    assert [(int(code), text) for code, text in rows] == list(EXIT_CODES)
    for code, text in EXIT_CODES:
        assert f"{code} {text}" in help_text


def test_version_is_the_package_version() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^\[project\][^\[]*?^version = "([^"]+)"', pyproject,
                      re.MULTILINE | re.DOTALL)
    assert found
    version = found[1]
    done = subprocess.run([sys.executable, "-m", "upscaler", "--version"], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == f"upscale {version}"
    assert upscaler.__version__ == version
    # The changelog's newest entry is this version.
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(r"^## (\S+)", changelog, re.MULTILINE)[1] == version  # type: ignore[index]


@pytest.mark.parametrize(
    ("job", "code", "needle"),
    [({"input": "missing.png"}, 5, "missing.png: input does not exist"),
     ({"model": "nosuchmodel"}, 3, "unknown model"),
     ({"model": "broken.onnx", "executor": "ncnn"}, 4,
      "executor ncnn cannot load an ONNX model; openvino, onnxruntime can (or --executor auto)"),
     ({"executor": "nosuch"}, 2, "unknown executor 'nosuch'"),
     ({"tile": 5}, 2, "tile must be 0 (no tiling) or at least 16")],
)
def test_a_mistake_exits_alike_from_the_command_a_job_file_and_the_api(
        tmp_path: Path, still: Path, capsys: pytest.CaptureFixture[str],
        job: dict[str, object], code: int, needle: str) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"\x00not onnx")
    given = {k: str(tmp_path / str(v)) if str(v).endswith(".onnx") else v
             for k, v in {"model": MODEL, **job}.items()}
    src = tmp_path / str(given.pop("input", still.name))
    out = tmp_path / "out.png"

    args = [str(src), "-o", str(out), "--quiet"]
    for key, value in given.items():
        args += [f"--{key}", str(value)]
    assert main(args) == code
    (line,) = capsys.readouterr().err.splitlines()
    assert needle in line and line.startswith("upscale: error: ")

    jobs = tmp_path / "jobs.yaml"
    keys = "".join(f"    {k}: {v}\n" for k, v in given.items())
    jobs.write_text(f"jobs:\n  - input: {src.name}\n    output: {out.name}\n{keys}",
                    encoding="utf-8")
    assert main(["--config", str(jobs), "--quiet"]) == code
    (line,) = capsys.readouterr().err.splitlines()
    assert needle in line and line.startswith(f"upscale: error: {jobs}:")

    with pytest.raises(upscaler.UpscalerError) as info:
        upscaler.upscale_path(src, out, **given)
    assert info.value.exit_code == code and needle in str(info.value)
    assert isinstance(info.value, ValueError) == (code == 2)  # the caller's mistake
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("call", "kind", "needle"),
    [(lambda up: up.upscale("cel.png"), TypeError, "expected a PIL image or a numpy array"),
     (lambda up: up.upscale(np.zeros((4, 4, 3), np.float32)), TypeError, "uint8 or uint16"),
     (lambda up: up.upscale(np.zeros((4, 4, 5), np.uint8)), ValueError, "(H, W, 1-4)"),
     (lambda up: up.upscale(Image.new("F", (4, 4))), ValueError, "mode 'F' is not supported"),
     (lambda up: upscaler.Upscaler(tiles=3), TypeError, "unknown option(s): tiles"),
     (lambda up: upscaler.Upscaler(tile="big"), TypeError, "tile must be an integer, not str"),
     (lambda up: upscaler.Upscaler(tile=5), ValueError, "tile must be 0"),
     (lambda up: upscaler.Upscaler(model=4), TypeError, "model must be a string, not int"),
     (lambda up: upscaler.upscale_path("a.png", crf=99), ValueError, "crf must be in"),
     (lambda up: upscaler.upscale_path(ROOT / "samples" / "cel.png", executor="nosuch"),
      ValueError, "unknown executor 'nosuch'")],
)
def test_api_mistakes_are_type_and_value_errors(up: upscaler.Upscaler, call: object, kind: type,
                                                needle: str) -> None:
    try:
        call(up)  # type: ignore[operator]
    except (TypeError, ValueError) as e:
        assert isinstance(e, kind) and isinstance(e, upscaler.UpscalerError)
        assert needle in str(e) and e.exit_code == 2
    else:
        pytest.fail("no error")


def test_the_api_takes_the_big_endian_16_bit_tiff_the_command_reads(up: upscaler.Upscaler,
                                                                    tmp_path: Path) -> None:
    gray = draw_cel(12, 16)[..., 1].astype(np.uint16) * 257 + 3
    Image.frombytes("I;16B", (16, 12), gray.astype(">u2").tobytes()).save(tmp_path / "g.tif")
    assert main([str(tmp_path / "g.tif"), *FAST]) == 0
    with Image.open(tmp_path / "g_upscaled.tif") as im:
        from_command = np.asarray(im).astype(np.uint16)
    with Image.open(tmp_path / "g.tif") as im:
        assert im.mode == "I;16B"
        big = up.upscale(im)
    assert big.mode == "I;16B" and big.size == (64, 48)
    assert np.array_equal(np.asarray(big).astype(np.uint16), from_command)


def test_a_job_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_bytes("jobs:\n  - input: café.png\n".encode("latin-1"))
    done = upscale("--config", str(jobs))
    assert done.returncode == 2
    assert one_line(done) == (f"upscale: error: {jobs}:2: not UTF-8 text (byte 0xe9); save the "
                              "job file as UTF-8")


@pytest.mark.parametrize("executor", ["auto", "onnxruntime"])  # auto: OpenVINO here
def test_a_random_onnx_file_is_one_line(tmp_path: Path, still: Path, executor: str) -> None:
    model = tmp_path / "random.onnx"
    model.write_bytes(np.random.default_rng(1).bytes(4000))
    done = upscale(str(still), "--model", str(model), "--executor", executor, "--quiet")
    assert done.returncode == 3
    assert one_line(done).startswith(f"upscale: error: {model}: not a loadable ONNX model: ")
    assert not (tmp_path / "a_upscaled.png").exists()


@pytest.mark.parametrize(("blocked", "executor"),
                         [("torch", "auto"), ("torch", "torch"), ("spandrel", "auto")])
def test_a_pth_without_the_torch_extra_says_how_to_install_it(
        tmp_path: Path, still: Path, blocked: str, executor: str) -> None:
    model = tmp_path / "net.pth"
    model.write_bytes(b"weights")
    done = upscale(str(still), "--model", str(model), "--executor", executor,
                   prelude=f"sys.modules[{blocked!r}] = None  # as if not installed")
    assert done.returncode == 4
    line = one_line(done)
    assert line.startswith("upscale: error: ") and "pip install 'upscaler[torch]'" in line
    assert f"{'spandrel' if blocked == 'spandrel' else 'PyTorch'}" in line


def test_hidden_files_in_a_folder_are_counted(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "stills"
    (src / ".thumbs").mkdir(parents=True)
    for path in (src / "a.png", src / ".b.png", src / ".thumbs" / "c.png"):
        Image.fromarray(draw_cel(8, 8)).save(path)
    assert main([str(src), *FAST]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"upscale: {src}: skipped 1 hidden file and 1 hidden folder (.b.png, .thumbs): names "
        "that start with a dot",
        "upscale: 1 done, 0 skipped, 0 failed"]
    assert sorted(p.name for p in (tmp_path / "stills_upscaled").iterdir()) == ["a.png"]


def test_a_folder_whose_outputs_exist_says_so_once(tmp_path: Path) -> None:
    src = tmp_path / "stills"
    src.mkdir()
    Image.fromarray(draw_cel(8, 8)).save(src / "a.png")
    assert main([str(src), *FAST]) == 0
    done = upscale(str(src), "--model", MODEL)  # with progress bars
    assert done.returncode == 0
    assert one_line(done) == ("upscale: 0 done, 1 skipped (outputs exist; --overwrite redoes "
                              "them), 0 failed")


def test_a_folder_named_models_is_given_as_a_path(tmp_path: Path) -> None:
    listed = upscale("models", cwd=tmp_path)
    assert listed.returncode == 0 and "built models are cached in" in listed.stdout

    (tmp_path / "models").mkdir()
    Image.fromarray(draw_cel(8, 8)).save(tmp_path / "models" / "a.png")
    meant = upscale("models", *FAST, cwd=tmp_path)
    assert meant.returncode == 2
    assert meant.stderr.strip().splitlines() == [
        f"upscale: error: upscale models takes only --clear-cache, not {' '.join(FAST)}; to "
        "upscale the folder named models, give it as ./models"]
    done = upscale("./models", *FAST, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "models_upscaled" / "a.png").is_file()


def test_a_reader_that_leaves_ends_the_listing_quietly() -> None:
    """`upscale models | head`: the pipe closes while the listing is written; a traceback of
    BrokenPipeError came out, and another at Python's own flush at exit."""
    proc = subprocess.Popen([sys.executable, "-m", "upscaler", "models"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before it writes a line: the first write finds no reader
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert err == b""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_listing_that_cannot_be_written_is_one_line() -> None:
    """`upscale models > /dev/full` (a full disk): a traceback, exit 1."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "upscaler", "models"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (
        5, "upscale: error: cannot write to standard output: No space left on device\n")


def test_ctrl_c_while_the_command_loads_is_one_line() -> None:
    """A Ctrl-C in the command's first third of a second landed inside the imports of numpy
    and OpenCV, before its own handling: a traceback. The interrupt is raised here where
    OpenCV is imported, as the signal raises it there."""
    script = (
        "import sys\n"
        "class Interrupting:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'cv2':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupting())\n"
        "sys.argv = ['upscale', 'x.png']\n"
        "from upscaler.launch import main\n"
        "sys.exit(main())\n")
    done = run_python(script)
    assert (done.returncode, done.stderr) == (130, "upscale: interrupted\n")
    # The package itself loads none of them: the console script imports it before the guard.
    loaded = subprocess.run([sys.executable, "-c", "import sys, upscaler.launch; "
                             "print(sorted({'cv2', 'numpy', 'PIL'} & set(sys.modules)))"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert loaded.strip() == "[]"
