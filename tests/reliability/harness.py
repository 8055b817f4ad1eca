"""Shared helpers for the reliability suite: build a host-style job folder, run the REAL engine subprocess
(`python -m gimp_openai job`), look at the history folder and the local server's /_stats.

Used by the tests in this folder and by the benchmarks (tests/bench), so both exercise the same path a GIMP
host takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.conftest import FAKE_KEY

ROOT = Path(__file__).resolve().parents[2]
PARTIAL_MARKERS = (".tmp", ".part", ".partial", "~")


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Opaque RGBA with detail everywhere, so any misplaced pixel shows."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return pixels


def rect_selection(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, bw, bh = box
    sel = np.zeros((h, w), np.uint8)
    sel[max(0, y) : max(0, y + bh), max(0, x) : max(0, x + bw)] = 255
    return sel


def engine_env(server_url: str | None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "plugin"), env.get("PYTHONPATH")]))
    env["OPENAI_API_KEY"] = FAKE_KEY
    if server_url:
        env["OPENAI_BASE_URL"] = server_url
    env.update(extra)
    return env


def write_settings(**values: Any) -> None:
    """Settings for engine subprocesses of this test (config dir comes from the autouse fixture's env)."""
    from gimp_openai.settings import update_settings

    update_settings(**values)


def plan_item(layer: dict, sel_bounds: dict, model: str = "gpt-image-2", padding: float = 0.25) -> dict:
    """What `gimp-openai plan` answers for one item (computed in-process: the same function)."""
    from gimp_openai import capabilities, geometry

    family = capabilities.family_for(model, {})
    region = geometry.plan_region(geometry.Rect.from_dict(layer), geometry.Rect.from_dict(sel_bounds), family,
                                  padding=padding)
    return region.to_dict()


@dataclass
class JobFolder:
    """A job folder as a host writes it: per item the place crop (RGBA PNG) and its selection (L PNG)."""

    folder: Path
    items: list[dict] = field(default_factory=list)
    originals: dict[str, np.ndarray] = field(default_factory=dict)
    selections: dict[str, np.ndarray] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def add(self, item_id: str, layer_pixels: np.ndarray, selection: np.ndarray, layer_xy: tuple[int, int] = (0, 0),
            model: str = "gpt-image-2", compress_level: int = 1) -> dict:
        """Plan the region, export exactly ``place`` (like the hosts), remember the original crop."""
        h, w = layer_pixels.shape[:2]
        layer = {"x": layer_xy[0], "y": layer_xy[1], "width": w, "height": h}
        ys, xs = np.nonzero(selection)
        bounds = {"x": int(xs.min()) + layer_xy[0], "y": int(ys.min()) + layer_xy[1],
                  "width": int(xs.max() - xs.min() + 1), "height": int(ys.max() - ys.min() + 1)}
        region = plan_item(layer, bounds, model)
        place = region["place"]
        x0, y0 = place["x"] - layer_xy[0], place["y"] - layer_xy[1]
        crop = np.ascontiguousarray(layer_pixels[y0 : y0 + place["height"], x0 : x0 + place["width"]])
        sel = np.ascontiguousarray(selection[y0 : y0 + place["height"], x0 : x0 + place["width"]])
        Image.fromarray(crop, "RGBA").save(self.folder / f"{item_id}.png", compress_level=compress_level)
        Image.fromarray(sel, "L").save(self.folder / f"{item_id}-sel.png", compress_level=compress_level)
        item = dict(region, id=item_id, layer=layer, image=f"{item_id}.png", selection=f"{item_id}-sel.png")
        self.items.append(item)
        self.originals[item_id] = crop
        self.selections[item_id] = sel
        return item

    def write(self, **options: Any) -> Path:
        job = {"version": 1, "operation": "edit", "model": "gpt-image-2", "prompt": "a red kite", "n": 1,
               "quality": "low", "out_dir": "out", "source_name": "photo.xcf", "add_mask": True,
               "align": False, "tone_match": False, "concurrency": 4, "items": self.items}
        job.update(self.options)
        job.update(options)
        path = self.folder / "job.json"
        path.write_text(json.dumps(job), encoding="utf-8")
        return path


@dataclass
class JobRun:
    code: int
    lines: list[dict]
    stdout: str
    stderr: str
    seconds: float
    peak_kb: int = 0

    @property
    def result(self) -> dict:
        return self.lines[-1] if self.lines else {}

    def item(self, item_id: str) -> dict:
        return next(i for i in self.result["items"] if i["id"] == item_id)


def run_job(job_path: Path, server_url: str | None, *, timeout: float = 120, sample=None, **env: str) -> JobRun:
    """`python -m gimp_openai job JOB.json` with the key in the environment only. ``sample(pid)`` is called
    repeatedly while it runs (the security tests read /proc/<pid>/cmdline with it)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "gimp_openai", "job", str(job_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=engine_env(server_url, **env))
    peak = 0
    if sample is not None:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            sample(proc.pid)
            peak = max(peak, vm_hwm_kb(proc.pid))
            time.sleep(0.02)
    out, err = proc.communicate(timeout=timeout)
    seconds = time.monotonic() - started
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return JobRun(proc.returncode, lines, out, err, seconds, peak)


def vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def history_files(folder: Path | None = None) -> list[Path]:
    folder = folder or Path(os.environ["GIMP_OPENAI_HISTORY_DIR"])
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
                  and not p.name.endswith(".mask.png"))  # results, not the masks kept beside them


def partial_files(*folders: Path) -> list[Path]:
    """Temp or partial files left behind (atomic writes must leave none)."""
    left = []
    for folder in folders:
        if folder and folder.exists():
            for p in folder.rglob("*"):
                name = p.name
                if name.startswith(".") or any(m in name for m in PARTIAL_MARKERS):
                    left.append(p)
    return left


def image_requests(server) -> list[dict]:
    """The /v1/images/* requests the server recorded, oldest first."""
    reqs = [r for r in server.stats()["requests"] if r.get("endpoint") in ("edits", "variations", "generations")
            or "/images/" in str(r.get("path", ""))]
    return sorted(reqs, key=lambda r: r.get("time", 0))


def gaps(requests_: list[dict]) -> list[float]:
    """Seconds between the end of one attempt and the start of the next (the client's wait)."""
    out = []
    for a, b in zip(requests_, requests_[1:], strict=False):
        out.append(b["time"] - (a["time"] + float(a.get("seconds") or 0)))
    return out


def returned_images(server, n_per_request: int, truncated_per_ok: int = 0) -> int:
    """Images the server did deliver: n per 200 answer whose body reached the client (not malformed, not
    reset/stalled), minus the ones it truncated on purpose."""
    total = 0
    for r in image_requests(server):
        if r.get("status") != 200:
            continue
        kinds = {f.split(";")[0].split("=")[0] for f in r.get("faults") or []}
        if kinds & {"malformed_json", "reset", "stall"}:
            continue
        total += n_per_request - (truncated_per_ok if "truncated_b64" in kinds else 0)
    return total
