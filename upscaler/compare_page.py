"""The page of a comparison: one self-contained HTML file, images inline, nothing fetched.

Per frame: a view of the source (nearest-neighbour scaled, so nothing is flattered) and of
each model's output, stacked at the same place, with a divider the user drags between a
"before" and an "after" picked from them; and a 1:1 zoom of the spot the user clicks. The page
stays light: views are downscaled to at most VIEW_WIDTH pixels, and the 1:1 pixels are a crop
of the frame's most detailed part unless the whole output is small or `full` is asked. Every
image is a lossless PNG, since the point is to see the models' pixels.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

from upscaler.comparison import Comparison
from upscaler.errors import MediaError, OutputExistsError, UsageError
from upscaler.media.images.write import atomic_write

# Views are no wider than this many CSS pixels (and no taller than VIEW_HEIGHT).
VIEW_WIDTH = 960
VIEW_HEIGHT = 720
# The 1:1 pixels kept per output, at the largest scale: the whole output up to this size,
# else a crop of this size around the most detailed spot.
ZOOM_WIDTH = 1024
ZOOM_HEIGHT = 576
# The zoom's window, in output pixels at the largest scale.
LENS = 256
PAGE_SUFFIXES = (".html", ".htm")


def page_path(src: Path, output: Path | None, overwrite: bool,
              output_is_folder: bool = False) -> Path:
    """Where the page goes: `output`, or `<input>_compare.html` beside the input (inside
    `output` when it is a folder, or was typed as one with a trailing slash). UsageError for a
    name that is not .html or a place that cannot be written, OutputExistsError for an
    existing page without `overwrite`; all found before any model runs."""
    from upscaler.job.plan import check_name_length, check_writable

    default = f"{src.resolve().name or 'input'}_compare.html"
    if output is not None:
        check_name_length(output, remedy="-o")  # before asking the file system of it
    if output is None:
        path = src.resolve().parent / default
    elif output_is_folder or output.is_dir():
        path = output / default
    else:
        path = output
    if path.suffix.lower() not in PAGE_SUFFIXES:
        raise UsageError("the page is HTML; give a name ending in .html", path)
    check_name_length(path, remedy="-o")
    try:
        check_writable(path.parent)
    except UsageError as e:
        raise UsageError(f"cannot write the page: {e.message}", path) from e
    if path.exists() and not overwrite:
        raise OutputExistsError("exists; give --overwrite to replace it", path)
    return path


def write_page(comparison: Comparison, path: Path, *, overwrite: bool = False,
               full: bool = False) -> int:
    """Write the page to `path` (a temporary file renamed into place, so a half-written page
    never stands where the finished one should); its size in bytes."""
    text = render(comparison, full=full).encode()
    if path.exists() and not overwrite:
        raise OutputExistsError("exists; give --overwrite to replace it", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MediaError(f"cannot make folder: {e.strerror or e}", path.parent) from e
    atomic_write(path, text)
    return len(text)


@dataclass(frozen=True)
class _Box:
    x: int
    y: int
    w: int
    h: int


def render(comparison: Comparison, *, full: bool = False) -> str:
    """The page's HTML."""
    big = max(r.scale for r in comparison.results)
    sections = [_frame_section(comparison, n, big, full) for n in range(len(comparison.frames))]
    title = f"upscale compare: {comparison.input.name}"
    return _PAGE.format(title=html.escape(title), heading=html.escape(title),
                        summary=html.escape(_summary(comparison)),
                        table=_table(comparison), frames="\n".join(sections),
                        style=_STYLE, script=_SCRIPT)


def _summary(c: Comparison) -> str:
    # Which of the input's frames the page shows; "2 compared" beside a table of four models
    # read as a count of models.
    noun = {"video": "frames", "folder": "images"}.get(c.kind)
    shown = f": {len(c.frames)} of its {c.total_frames} {noun}" if noun else ""
    given = [f"{k}={v}" for k, v in sorted(vars(c.options).items())
             if k not in ("model", "overwrite") and v != getattr(type(c.options)(), k)]
    settings = ", ".join(given) if given else "default settings"
    held, seen = c.held
    reused = (f" Held drawings: {held} of the {seen} frames read after those shown "
              f"({held / seen:.0%}); a job reuses them, and the times leave them out."
              if seen else "")
    return (f"{c.input.name}{shown}, {settings}. Estimates are for the whole input on this "
            f"machine.{reused}")


def _table(c: Comparison) -> str:
    rows = []
    for r in c.results:
        height, width = r.outputs[0].shape[:2]
        cells = [f'<th scope="row">{html.escape(r.model)}</th>',
                 f"<td>{html.escape(r.executor)}</td>",
                 f'<td class="num">{r.scale:g}x</td>',
                 f'<td class="num">{width}x{height}</td>',
                 f'<td class="num" data-value="{r.seconds_per_frame:.6f}">'
                 f"{r.seconds_per_frame:.3f}</td>",
                 f'<td class="num" data-value="{r.whole_seconds:.3f}">'
                 f"{_duration(r.whole_seconds)}</td>",
                 f'<td class="num" data-value="{r.output_bytes}">{_size(r.output_bytes)}</td>']
        rows.append(f'<tr data-model="{html.escape(r.model)}">{"".join(cells)}</tr>')
    unit = {"video": "frame", "folder": "image", "image": "image"}[c.kind]
    return ("<table id=\"models\"><thead><tr><th>model</th><th>executor</th><th>scale</th>"
            f"<th>output</th><th>seconds per {unit}</th><th>whole input</th>"
            f"<th>output size</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _frame_section(c: Comparison, n: int, big: float, full: bool) -> str:
    frame = c.frames[n]
    src = _display(frame.pixels)
    src_h, src_w = src.shape[:2]
    out_w, out_h = round(src_w * big), round(src_h * big)
    fit = min(1.0, VIEW_WIDTH / out_w, VIEW_HEIGHT / out_h)
    view_w, view_h = max(1, round(out_w * fit)), max(1, round(out_h * fit))
    zoom = _zoom_box(src, big, full)
    names = ["source", *(r.model for r in c.results)]
    shown = [(_resize(src, view_w, view_h, nearest=True), _nearest_crop(src, zoom, big))]
    scales = [big]
    for r in c.results:
        out = _display(r.outputs[n])
        box = _Box(*(round(v * r.scale) for v in (zoom.x, zoom.y, zoom.w, zoom.h)))
        shown.append((_resize(out, view_w, view_h, nearest=False),
                      out[box.y:box.y + box.h, box.x:box.x + box.w]))
        scales.append(r.scale)
    views = [_img(view, "view", name) for name, (view, _) in zip(names, shown, strict=True)]
    # A crop that is its view (a small frame kept whole) is not stored twice: the page's
    # script gives it the view's data.
    crops = [_img(crop, "crop", name, same_as=i if np.array_equal(view, crop) else None)
             for i, (name, (view, crop)) in enumerate(zip(names, shown, strict=True))]
    options = "".join(f'<option value="{i}">{html.escape(name)}</option>'
                      for i, name in enumerate(names))
    # The lens window in source pixels: LENS output pixels at the largest scale, or less
    # where the kept region is smaller.
    lens_w, lens_h = min(zoom.w, LENS / big), min(zoom.h, LENS / big)
    lenses = "".join(
        f'<figure><figcaption>{html.escape(name)}</figcaption><div class="lens" '
        f'data-scale="{scale:g}" style="width:{round(lens_w * scale)}px;'
        f'height:{round(lens_h * scale)}px">{crop}</div></figure>'
        for name, scale, crop in zip(names, scales, crops, strict=True))
    data = {"source": [src_w, src_h], "zoom": [zoom.x, zoom.y, zoom.w, zoom.h],
            "view": [view_w, view_h], "lens": [lens_w, lens_h]}
    return f"""<section class="frame" data-frame='{json.dumps(data)}'>
<h2>{html.escape(frame.label)}</h2>
<div class="controls">before <select class="before">{options}</select>
after <select class="after">{options}</select>
<span class="hint">drag the divider; click a spot to see it 1:1 below</span></div>
<div class="viewer" style="width:{view_w}px;height:{view_h}px">{"".join(views)}
<div class="area"></div><div class="spot"></div>
<div class="divider" role="slider" tabindex="0" aria-label="divider"><span></span></div></div>
<div class="zoom">{lenses}</div>
</section>"""


def _display(pixels: np.ndarray) -> np.ndarray:
    """8-bit RGB or RGBA of any picture the job reads: gray and 16-bit made viewable."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    channels = pixels.shape[2]
    if channels in (1, 2):
        gray = np.repeat(pixels[..., :1], 3, axis=2)
        pixels = gray if channels == 1 else np.concatenate([gray, pixels[..., 1:]], axis=2)
    return np.ascontiguousarray(pixels)


def _resize(pixels: np.ndarray, width: int, height: int, nearest: bool) -> np.ndarray:
    if pixels.shape[:2] == (height, width):
        return pixels
    image = PIL.Image.fromarray(pixels)
    method = PIL.Image.Resampling.NEAREST if nearest else PIL.Image.Resampling.LANCZOS
    if not nearest and (width > image.width or height > image.height):
        # A smaller-scale model's output shown beside larger ones: enlarged as the source is,
        # so its view shows its own pixels rather than a resampler's.
        method = PIL.Image.Resampling.NEAREST
    return np.asarray(image.resize((width, height), method))


def _zoom_box(src: np.ndarray, big: float, full: bool) -> _Box:
    """The part of the source (in source pixels) kept at 1:1: all of it when small enough or
    `full`, else the ZOOM_WIDTH x ZOOM_HEIGHT output-pixel window with the most edges."""
    height, width = src.shape[:2]
    w = width if full else min(width, math.ceil(ZOOM_WIDTH / big))
    h = height if full else min(height, math.ceil(ZOOM_HEIGHT / big))
    if (w, h) == (width, height):
        return _Box(0, 0, width, height)
    gray = src[..., :3].astype(np.float32).mean(axis=2)
    edges = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    sums = np.pad(edges, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    windows = sums[h - 1:, w - 1:] - sums[h - 1:, :-w + 1 or None] \
        - sums[:-h + 1 or None, w - 1:] + sums[:-h + 1 or None, :-w + 1 or None]
    y, x = np.unravel_index(int(np.argmax(windows)), windows.shape)
    return _Box(min(int(x), width - w), min(int(y), height - h), w, h)


def _nearest_crop(src: np.ndarray, box: _Box, scale: float) -> np.ndarray:
    crop = src[box.y:box.y + box.h, box.x:box.x + box.w]
    return _resize(crop, round(box.w * scale), round(box.h * scale), nearest=True)


def _img(pixels: np.ndarray, kind: str, name: str, same_as: int | None = None) -> str:
    height, width = pixels.shape[:2]
    head = f'<img class="{kind}" alt="{html.escape(name)}" width="{width}" height="{height}"'
    if same_as is not None:
        return f'{head} data-view="{same_as}">'
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, "PNG", compress_level=6)
    return f'{head} src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'



def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;background:#1e1f22;color:#ddd}
h1{font-size:1.3em}h2{font-size:1.1em;margin:1.5em 0 .4em}
table{border-collapse:collapse}th,td{padding:.3em .8em;border-bottom:1px solid #444;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.controls{margin:.3em 0}.hint{color:#999;margin-left:1em}
.viewer{position:relative;overflow:hidden;cursor:crosshair;user-select:none;touch-action:none}
.viewer img.view{position:absolute;left:0;top:0;display:none;image-rendering:auto}
.viewer img.view.before,.viewer img.view.after{display:block}
.divider{position:absolute;z-index:3;top:0;bottom:0;width:3px;margin-left:-1px;background:#fff;
 cursor:ew-resize;box-shadow:0 0 3px #000}
.divider span{position:absolute;top:50%;left:-9px;width:21px;height:21px;margin-top:-10px;
 border-radius:50%;background:#fff;box-shadow:0 0 3px #000}
.area,.spot{position:absolute;z-index:3;pointer-events:none;border:1px dashed #ff0}
.spot{border:2px solid #f0f}
.zoom{display:flex;flex-wrap:wrap;gap:1em;margin-top:.6em}
.zoom figure{margin:0}.zoom figcaption{color:#aaa;margin-bottom:.2em}
.lens{position:relative;overflow:hidden;background:#000}
.lens img{position:absolute;left:0;top:0;image-rendering:pixelated;max-width:none}
"""

_SCRIPT = """
"use strict";
for (const section of document.querySelectorAll("section.frame")) {
  const data = JSON.parse(section.dataset.frame);
  const viewer = section.querySelector(".viewer");
  const views = [...viewer.querySelectorAll("img.view")];
  for (const crop of section.querySelectorAll("img.crop[data-view]")) {
    crop.src = views[Number(crop.dataset.view)].src;
  }
  const divider = viewer.querySelector(".divider");
  const before = section.querySelector("select.before");
  const after = section.querySelector("select.after");
  const [viewW, viewH] = data.view;
  const toSource = data.source[0] / viewW;
  let split = viewW / 2;
  before.value = "0";
  after.value = String(Math.min(1, views.length - 1));
  function draw() {
    views.forEach((img, i) => {
      img.classList.toggle("before", String(i) === before.value);
      img.classList.toggle("after", String(i) === after.value);
      img.style.zIndex = String(i) === after.value ? "2" : "1";
      img.style.clipPath = String(i) === after.value ? `inset(0 0 0 ${split}px)` : "none";
    });
    divider.style.left = `${split}px`;
  }
  before.addEventListener("change", draw);
  after.addEventListener("change", draw);
  const [zx, zy, zw, zh] = data.zoom;
  const area = viewer.querySelector(".area");
  const spot = viewer.querySelector(".spot");
  const whole = zw === data.source[0] && zh === data.source[1];
  area.style.display = whole ? "none" : "block";
  Object.assign(area.style, {left: `${zx / toSource}px`, top: `${zy / toSource}px`,
    width: `${zw / toSource}px`, height: `${zh / toSource}px`});
  const [halfX, halfY] = data.lens.map((side) => side / 2);  // source pixels
  function look(sx, sy) {
    const cx = Math.max(zx + halfX, Math.min(zx + zw - halfX, sx));
    const cy = Math.max(zy + halfY, Math.min(zy + zh - halfY, sy));
    for (const lens of section.querySelectorAll(".lens")) {
      const scale = Number(lens.dataset.scale);
      const img = lens.querySelector("img");
      img.style.left = `${-Math.round((cx - halfX - zx) * scale)}px`;
      img.style.top = `${-Math.round((cy - halfY - zy) * scale)}px`;
    }
    Object.assign(spot.style, {left: `${(cx - halfX) / toSource}px`,
      top: `${(cy - halfY) / toSource}px`, width: `${2 * halfX / toSource}px`,
      height: `${2 * halfY / toSource}px`});
  }
  // The move and release are heard on the window: a fast drag leaves the thin divider.
  let dragging = false;
  divider.addEventListener("pointerdown", (e) => {
    dragging = true;
    e.preventDefault();
  });
  window.addEventListener("pointermove", (e) => {
    if (!dragging) return;
    const box = viewer.getBoundingClientRect();
    split = Math.max(0, Math.min(viewW, e.clientX - box.left));
    draw();
  });
  window.addEventListener("pointerup", () => { dragging = false; });
  divider.addEventListener("keydown", (e) => {
    const step = {ArrowLeft: -10, ArrowRight: 10}[e.key];
    if (step === undefined) return;
    split = Math.max(0, Math.min(viewW, split + step));
    draw();
    e.preventDefault();
  });
  viewer.addEventListener("click", (e) => {
    if (e.target === divider || divider.contains(e.target)) return;
    const box = viewer.getBoundingClientRect();
    look((e.clientX - box.left) * toSource, (e.clientY - box.top) * toSource);
  });
  draw();
  look(zx + zw / 2, zy + zh / 2);
}
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>{style}</style></head>
<body><h1>{heading}</h1><p>{summary}</p>
{table}
{frames}
<script>{script}</script>
</body></html>
"""
