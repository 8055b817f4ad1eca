"""Benchmarks: ``scripts/bench`` or ``python -m tests.bench.run [--out FILE] [--quick] [--no-faults]``.

Everything is measured in one run, against the REAL local server (a subprocess) with a fixed simulated
latency, through the REAL engine subprocess, exactly as a host drives it:

* host-path overhead per edit (job wall time minus the server's time: the latency, or its handling where that
  took longer) for a 1024² selection in 1024², 4096² and 8000² layers; the host exports only the planned
  ``place`` region, so only that crop is generated; ratio 8000²/1024² (target <= 1.5). The CLI path (decodes
  the whole file) apart.
* upload bytes per edit (the server's ``/_stats`` body_bytes) / PNG size of the crop at the target size
  (target <= 1.05), and the whole layer's PNG / the upload;
* batch of 8 with 2 s latency: wall / ideal ceil(8/c) x 2 s (target <= 1.2), speed-up over sequential
  (target >= 3.5 at concurrency 4);
* peak memory (ru_maxrss of the engine process, via a wrapper) for the 8000² layer edit (target <= 4 x the
  crop's RGBA + 150 MB);
* seamless cost share for a 2048² crop: the same job with align+tone and without, paired, from the upload on
  (see bench_seamless), / the engine's time with them (target <= 15%);
* host-side time in real GIMP 3.0 and 3.2 (export + insert, recorded by the host), when the chroots exist
  (tests/bench/gimp3_host.py).

Prints a table and writes JSON (``bench-results/bench-<date>.json`` unless ``--out``). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugin"))

sys.path.insert(0, str(ROOT / "plugin" / "hostlib"))

import gimp_openai_host as host_lib  # noqa: E402

from tests.bench import batchapi as batch_api_bench  # noqa: E402
from tests.bench.stream import bench_stream, stream_line  # noqa: E402
from tests.reliability import harness as H  # noqa: E402
from tests.support.local_server import LocalServerHandle  # noqa: E402

SAMPLE = ROOT / "plugin" / "gimp_openai" / "data" / "lake-balloon.png"
LATENCY = 1.0
SELECTION = 1024
LAYERS = (1024, 4096, 8000)
MODEL = "gpt-image-2"


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Photo-like RGBA of any size: the sample photo resized (smooth detail) plus camera-like noise.
    The same size always gives the same pixels, so crops of equal size cost the same whatever the layer."""
    base = np.asarray(Image.open(SAMPLE).convert("RGB"))
    rgb = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(seed)
    out = np.empty((height, width, 4), np.uint8)
    step = 512
    for y in range(0, height, step):  # in bands: no full-size int16 temporary
        band = rgb[y : y + step].astype(np.int16)
        band += rng.integers(-3, 4, size=band.shape, dtype=np.int16)
        out[y : y + step, :, :3] = np.clip(band, 0, 255)
    out[..., 3] = 255
    return out


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


class Env:
    """Private config/cache/history folders for every engine run of the benchmark."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for var, sub in (("GIMP_OPENAI_CONFIG_DIR", "config"), ("GIMP_OPENAI_CACHE_DIR", "cache"),
                         ("GIMP_OPENAI_HISTORY_DIR", "history")):
            os.environ[var] = str(folder / sub)
        os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"


# --- one host-path job, timed -----------------------------------------------------------------------------------


def host_job(folder: Path, layer_size: int, *, selection: int = SELECTION, align: bool = True, tone: bool = True,
             model: str = MODEL) -> Path:
    """The job a host hands over for a centred ``selection``² square in a ``layer_size``² layer: plan, then
    export only ``place`` (generated directly at its size; the layer itself is never materialised)."""
    folder.mkdir(parents=True, exist_ok=True)
    layer = {"x": 0, "y": 0, "width": layer_size, "height": layer_size}
    off = (layer_size - selection) // 2
    bounds = {"x": off, "y": off, "width": selection, "height": selection}
    region = H.plan_item(layer, bounds, model)
    place = region["place"]
    crop = photo_like(place["width"], place["height"])
    sel = np.zeros((place["height"], place["width"]), np.uint8)
    sel[off - place["y"] : off - place["y"] + selection, off - place["x"] : off - place["x"] + selection] = 255
    # exactly what both hosts write (hostlib's own PNG writer)
    host_lib.write_png(str(folder / "img-1.png"), crop.shape[1], crop.shape[0], crop.tobytes(), 4)
    host_lib.write_png(str(folder / "img-1-sel.png"), sel.shape[1], sel.shape[0], sel.tobytes(), 1)
    item = dict(region, id="img-1", layer=layer, image="img-1.png", selection="img-1-sel.png")
    job = {"version": 1, "operation": "edit", "model": model, "prompt": "a red kite", "n": 1, "quality": "low",
           "out_dir": "out", "source_name": "bench.xcf", "add_mask": True, "align": align, "tone_match": tone,
           "blend": "feather", "concurrency": 4, "items": [item]}
    (folder / "job.json").write_text(json.dumps(job))
    return folder / "job.json"


MAXRSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "sys.stderr.write('\\nMAXRSS_KB %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def timed_run(argv: list[str], server_url: str, *, lines: bool = True) -> dict:
    """Run an engine command through a wrapper that reports the child's peak RSS; timestamp each stdout line."""
    env = H.engine_env(server_url)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", MAXRSS_WRAPPER, sys.executable, "-m", "gimp_openai", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stamped = []
    assert proc.stdout is not None
    for line in proc.stdout:
        stamped.append((time.monotonic() - started, line))
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait(600)
    wall = time.monotonic() - started
    maxrss = 0
    for line in err.splitlines():
        if line.startswith("MAXRSS_KB "):
            maxrss = int(line.split()[1])
    parsed = []
    if lines:
        for t, line in stamped:
            if line.strip().startswith("{"):
                parsed.append((t, json.loads(line)))
    return {"code": proc.returncode, "wall": wall, "maxrss_kb": maxrss, "lines": parsed,
            "stderr": "\n".join(x for x in err.splitlines() if not x.startswith("MAXRSS_KB")).strip()}


def server_seconds(server: LocalServerHandle, latency: float) -> tuple[float, list[dict]]:
    reqs = H.image_requests(server)
    return sum(served_seconds(r, latency) for r in reqs), reqs


def served_seconds(request: dict, latency: float) -> float:
    """How long the local server took to answer one request: its ``--latency`` runs from the request's arrival
    with the painting inside it, so the answer left after the latency or the painting, whichever ended later
    (``seconds`` also holds reading the body, a few ms; leaving that out when the latency ends later makes the
    overhead a little larger, never smaller)."""
    return max(latency, float(request.get("seconds") or 0))


# --- the figures ---------------------------------------------------------------------------------------------------


def bench_host_path(server: LocalServerHandle, work: Path, repeats: int) -> list[dict]:
    """Repeats interleave the sizes (1024, 4096, 8000, 1024, ...) so load drift on a shared machine hits all."""
    from gimp_openai import composite, geometry, imaging

    jobs_ = {size: host_job(work / f"host-{size}", size) for size in LAYERS}
    runs: dict[int, list[dict]] = {size: [] for size in LAYERS}
    for _ in range(repeats):
        for size in LAYERS:
            server.reset()
            run = timed_run(["job", str(jobs_[size])], server.url)
            result = run["lines"][-1][1] if run["lines"] else {}
            if run["code"] != 0 or not result.get("ok"):
                raise RuntimeError(f"host job {size} failed: {result} {run['stderr']}")
            spent, reqs = server_seconds(server, LATENCY)
            runs[size].append({"wall": run["wall"], "server": spent, "overhead": run["wall"] - spent,
                               "first_line": run["lines"][0][0], "maxrss_kb": run["maxrss_kb"],
                               "upload_bytes": sum(int(r.get("body_bytes") or 0) for r in reqs)})
    rows = []
    for size in LAYERS:
        job = jobs_[size]
        item = json.loads(job.read_text())["items"][0]
        place = item["place"]
        plan = geometry.RegionPlan.from_dict(item)
        request = composite.request_pixels(imaging.read_image(job.parent / "img-1.png"), plan)
        t = time.perf_counter()
        png6 = len(_png(request, 6))
        encode6 = time.perf_counter() - t
        t = time.perf_counter()
        png_libpng1 = len(imaging.encode_png(request))
        encode_libpng1 = time.perf_counter() - t
        t = time.perf_counter()
        png_upload = len(imaging.encode_upload_png(request))
        encode_upload = time.perf_counter() - t
        these = runs[size]
        upload = these[0]["upload_bytes"]
        rows.append({
            "layer": size, "place": [place["width"], place["height"]], "target": item["target"],
            "wall_s": median([r["wall"] for r in these]), "server_s": median([r["server"] for r in these]),
            "overhead_s": median([r["overhead"] for r in these]),
            "overhead_runs_s": [round(r["overhead"], 3) for r in these],
            "first_line_s": median([r["first_line"] for r in these]),
            "maxrss_mb": max(r["maxrss_kb"] for r in these) / 1024,
            "crop_rgba_mb": place["width"] * place["height"] * 4 / 2**20,
            "upload_bytes": upload, "crop_png_target_level6": png6, "crop_png_target_libpng1": png_libpng1,
            "upload_ratio_level6": upload / png6, "upload_ratio_libpng1": upload / png_libpng1,
            "encode_s_level6": encode6, "encode_s_libpng1": encode_libpng1,
            "crop_png_target_upload": png_upload, "encode_s_upload": encode_upload,
        })
    return rows


def _png(pixels: np.ndarray, level: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=level)
    return buf.getvalue()


def whole_layer_png_bytes(size: int, work: Path) -> tuple[int, Path]:
    """What a plug-in sending the whole layer uploads (the engine's PNG level, written once and cached)."""
    path = work / f"layer-{size}.png"
    if not path.exists():
        from gimp_openai import imaging

        path.write_bytes(imaging.encode_png(photo_like(size, size)))
    return path.stat().st_size, path


def bench_cli(server: LocalServerHandle, work: Path, sizes: tuple[int, ...]) -> list[dict]:
    rows = []
    for size in sizes:
        _, picture = whole_layer_png_bytes(size, work)
        off = (size - SELECTION) // 2
        out = work / f"cli-out-{size}"
        server.reset()
        run = timed_run(["--json", "edit", str(picture), "--rect", f"{off},{off},{SELECTION},{SELECTION}",
                         "--prompt", "a red kite", "--model", MODEL, "--quality", "low", "--out", str(out), "-q"],
                        server.url)
        if run["code"] != 0:
            raise RuntimeError(f"CLI {size}: {run['stderr']}")
        spent, _ = server_seconds(server, LATENCY)
        rows.append({"layer": size, "wall_s": run["wall"], "server_s": spent, "overhead_s": run["wall"] - spent,
                     "maxrss_mb": run["maxrss_kb"] / 1024})
        for p in out.glob("*"):
            p.unlink()
    return rows


def big_cli_picture(size: int, work: Path, *, transparent: bool) -> Path:
    """A ``size``² photo-like PNG; ``transparent`` gives it an alpha ramp (the case whose .ora thumbnail once
    resized the whole canvas in premultiplied float32)."""
    path = work / f"cli-{size}-{'transparent' if transparent else 'opaque'}.png"
    if not path.exists():
        from gimp_openai import imaging

        pixels = photo_like(size, size)
        if transparent:
            pixels[..., 3] = np.linspace(0, 255, size, dtype=np.float32).astype(np.uint8)[None, :]
        path.write_bytes(imaging.encode_png(pixels))
        del pixels
    return path


def bench_cli_memory(server: LocalServerHandle, work: Path, size: int = 8000, repeats: int = 1) -> list[dict]:
    """The CLI's big-image path (it once took 7.7 GB for a transparent 8000² edit): a 1024² --rect edit of a
    ``size``² opaque and transparent picture, n=1; peak RSS of the CLI process and its seconds beyond the
    server's (wall less ``served_seconds``)."""
    rows = []
    for transparent in (False, True):
        picture = big_cli_picture(size, work, transparent=transparent)
        off = (size - SELECTION) // 2
        out = work / f"cli-mem-out-{size}"
        runs = []
        for _ in range(repeats):
            server.reset()
            run = timed_run(["--json", "edit", str(picture), "--rect", f"{off},{off},{SELECTION},{SELECTION}",
                             "--prompt", "a red kite", "--model", MODEL, "--quality", "low", "--out", str(out),
                             "-q"], server.url, lines=False)
            if run["code"] != 0:
                raise RuntimeError(f"CLI {size} transparent={transparent}: {run['stderr']}")
            spent, _ = server_seconds(server, LATENCY)
            runs.append({"wall": run["wall"], "server": spent, "maxrss_mb": run["maxrss_kb"] / 1024})
            for p in out.glob("*"):
                p.unlink()
        rows.append({"layer": size, "transparent": transparent, "selection": SELECTION,
                     "wall_s": median([r["wall"] for r in runs]), "server_s": median([r["server"] for r in runs]),
                     "overhead_s": median([r["wall"] - r["server"] for r in runs]),
                     "maxrss_mb": max(r["maxrss_mb"] for r in runs)})
    return rows


def cli_memory_lines(rows: list[dict]) -> list[str]:
    lines = ["CLI big-image path (1024² --rect edit, n=1; peak RSS of the CLI process via a wrapper's "
             "RUSAGE_CHILDREN; target <= 700 MB and <= 4 s beyond the server):"]
    for r in rows:
        kind = "transparent" if r["transparent"] else "opaque"
        lines.append(f"{r['layer']:>5}² {kind:<11}  wall {r['wall_s']:6.2f} s  server {r['server_s']:5.2f} s  "
                     f"beyond the server {r['overhead_s']:6.2f} s  peak {r['maxrss_mb']:6.0f} MB")
    return lines


def bench_batch(work: Path, latency: float = 2.0) -> dict:
    """8 small items (dall-e-2 at 256², so the server's own work is negligible next to its 2 s latency)."""
    folder = work / "batch"
    folder.mkdir(exist_ok=True)
    jf = H.JobFolder(folder)
    for i in range(8):
        jf.add(f"img-{i}", photo_like(160, 120, seed=i), H.rect_selection(120, 160, (50, 30, 60, 50)),
               model="dall-e-2")
    figures: dict = {"latency_s": latency, "items": 8}
    with LocalServerHandle(("--latency", str(latency))) as server:
        for concurrency in (1, 4, 8):
            job = jf.write(model="dall-e-2", concurrency=concurrency, n=1, quality="auto")
            server.reset()
            run = timed_run(["job", str(job)], server.url)
            result = run["lines"][-1][1]
            if not result.get("ok"):
                raise RuntimeError(f"batch failed: {result}")
            reqs = H.image_requests(server)
            in_engine = run["lines"][-1][0] - run["lines"][0][0]
            ideal = math.ceil(8 / concurrency) * latency
            starts = sorted(r["time"] for r in reqs)
            figures[f"c{concurrency}"] = {
                "wall_s": run["wall"], "engine_wall_s": in_engine, "ideal_s": ideal,
                "ratio_wall": run["wall"] / ideal, "ratio_engine": in_engine / ideal,
                "requests": len(reqs), "max_parallel_starts_within_0.5s": max(
                    sum(1 for s in starts if 0 <= s - t < 0.5) for t in starts),
            }
    figures["speedup_c4"] = figures["c1"]["engine_wall_s"] / figures["c4"]["engine_wall_s"]
    figures["speedup_c4_wall"] = figures["c1"]["wall_s"] / figures["c4"]["wall_s"]
    return figures


def _phase_seconds(run: dict, served: float) -> tuple[float, float]:
    """(request, after): the engine's own seconds from the upload phase to the response (server time excluded),
    and from the response ("saving") to the job's result line."""
    first: dict[str, float] = {}
    for t, line in run["lines"]:
        first.setdefault(str(line.get("phase", line.get("type"))), t)
    return first["saving"] - first["upload"] - served, first["result"] - first["saving"]


def bench_seamless(work: Path, repeats: int) -> dict:
    """A 2048² place (1366² selection in a 4096² layer) against the gpt-like server (results shifted and
    re-toned like GPT's): the same job with align+tone and without, run back to back `repeats` times.

    The cost is measured from the upload phase on, as paired differences (with - without, run by run): before the
    upload both jobs run the same code (interpreter start, reading the job and the crop, planning, encoding the
    upload), and its noise on a shared machine (+-50 ms) would drown a 100 ms effect. The seamless work runs in
    the two phases measured: preparation while the server works, the corrections after the response. The whole
    jobs' overheads (medians) and their plain difference are reported beside it."""
    out: dict = {}
    with LocalServerHandle(("--latency", str(LATENCY), "--render", "gpt-like")) as server:
        jobs_ = {label: host_job(work / f"seamless-{label}", 4096, selection=1366, align=on, tone=on)
                 for label, on in (("with", True), ("without", False))}
        overheads: dict[str, list[float]] = {"with": [], "without": []}
        phases: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
        for k in range(repeats):  # interleaved, in alternating order (ABBA): neither label always runs first
            for label in (("with", "without") if k % 2 == 0 else ("without", "with")):
                job = jobs_[label]
                server.reset()
                run = timed_run(["job", str(job)], server.url)
                result = run["lines"][-1][1]
                if not result.get("ok"):
                    raise RuntimeError(f"seamless job failed: {result}")
                spent, _ = server_seconds(server, LATENCY)
                overheads[label].append(run["wall"] - spent)
                phases[label].append(_phase_seconds(run, spent))
                if label == "with":
                    out["report"] = result["items"][0]["outputs"][0].get("report")
        for label in jobs_:
            out[f"overhead_{label}_s"] = median(overheads[label])
            out[f"overhead_{label}_runs_s"] = [round(x, 3) for x in overheads[label]]
        out["place"] = json.loads(jobs_["with"].read_text())["items"][0]["place"]
    pairs = list(zip(phases["with"], phases["without"], strict=True))
    out["request_delta_s"] = median([w[0] - o[0] for w, o in pairs])
    out["after_delta_s"] = median([w[1] - o[1] for w, o in pairs])
    out["after_delta_runs_s"] = [round(w[1] - o[1], 3) for w, o in pairs]
    out["seamless_s"] = out["request_delta_s"] + out["after_delta_s"]
    out["share"] = out["seamless_s"] / out["overhead_with_s"]
    out["whole_job_delta_s"] = out["overhead_with_s"] - out["overhead_without_s"]
    # the same work in-process, without interpreter start-up, for reference
    from gimp_openai.seamless import make_seamless

    original = photo_like(2048, 2048)
    shifted = np.roll(original, (3, -2), axis=(0, 1)).copy()
    shifted[..., :3] = np.clip(shifted[..., :3].astype(np.int16) + 6, 0, 255).astype(np.uint8)
    sel = np.zeros((2048, 2048), np.uint8)
    sel[341:1707, 341:1707] = 255
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        make_seamless(original, shifted, sel, align=True, tone_match=True, blend="feather")
        times.append(time.perf_counter() - t)
    out["make_seamless_cold_s"] = times[0]  # first call in a process (what a job pays)
    out["make_seamless_in_process_s"] = median(times[1:])
    return out


def seamless_line(s: dict) -> str:
    return (f"Seamless share, {s['place']['width']}x{s['place']['height']} place (gpt-like server): "
            f"{s['seamless_s']:.3f} s ({s['request_delta_s']:+.3f} while the server works, "
            f"{s['after_delta_s']:+.3f} after the response; medians of paired runs) = {100 * s['share']:.1f}% of the "
            f"engine's {s['overhead_with_s']:.2f} s with align+tone (target <= 15%); whole jobs "
            f"{s['overhead_with_s']:.2f} vs {s['overhead_without_s']:.2f} s without ({s['whole_job_delta_s']:+.2f}); "
            f"make_seamless in-process "
            f"{s['make_seamless_cold_s']:.2f} s cold, {s['make_seamless_in_process_s']:.2f} s warm; "
            f"report: {s.get('report')}")


def startup_seconds(repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "import gimp_openai.jobs, gimp_openai.operations, gimp_openai.client, "
                        "gimp_openai.imaging, gimp_openai.seamless"], env=H.engine_env(None), check=True)
        times.append(time.monotonic() - t)
    return median(times)


# --- report ---------------------------------------------------------------------------------------------------------


def run_host_only(repeats: int = 3) -> dict:
    """Only the host-path rows (overhead per layer size, ratio, upload ratio, peak memory): ``--host-only``."""
    with tempfile.TemporaryDirectory(prefix="gimp-openai-bench-") as tmp:
        work = Path(tmp)
        Env(work / "home")
        figures: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                     "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
                         "latency_s": LATENCY, "startup_s": startup_seconds()}
        with LocalServerHandle(("--latency", str(LATENCY))) as server:
            figures["host"] = bench_host_path(server, work, repeats)
        _host_figures(figures, work)
    return figures


def run_cli_memory_only(size: int, repeats: int) -> list[dict]:
    """Only the CLI big-image rows: ``--cli-memory-only [--size N]``."""
    with tempfile.TemporaryDirectory(prefix="gimp-openai-bench-") as tmp:
        work = Path(tmp)
        Env(work / "home")
        with LocalServerHandle(("--latency", str(LATENCY))) as server:
            return bench_cli_memory(server, work, size, repeats)


def run_seamless_only(repeats: int = 3) -> dict:
    """Only the seamless share: ``--seamless-only``."""
    with tempfile.TemporaryDirectory(prefix="gimp-openai-bench-") as tmp:
        work = Path(tmp)
        Env(work / "home")
        return {"seamless": bench_seamless(work, repeats)}


def _host_figures(figures: dict, work: Path) -> None:
    for row in figures["host"]:
        whole, _ = whole_layer_png_bytes(row["layer"], work)
        row["whole_layer_png_bytes"] = whole
        row["whole_layer_vs_upload"] = whole / row["upload_bytes"]
    host = {r["layer"]: r for r in figures["host"]}
    figures["ratio_8000_1024"] = host[8000]["overhead_s"] / host[1024]["overhead_s"]
    figures["ratio_8000_1024_without_startup"] = (host[8000]["overhead_s"] - figures["startup_s"]) / max(
        1e-9, host[1024]["overhead_s"] - figures["startup_s"])
    figures["ratio_8000_4096_same_place"] = host[8000]["overhead_s"] / host[4096]["overhead_s"]
    for row in figures["host"]:
        row["overhead_s_per_place_mp"] = row["overhead_s"] / (row["place"][0] * row["place"][1] / 1e6)
    big = host[8000]
    figures["memory"] = {"peak_mb": big["maxrss_mb"], "crop_rgba_mb": big["crop_rgba_mb"],
                         "target_mb": 4 * big["crop_rgba_mb"] + 150}


def run_all(*, quick: bool = False, faults: bool = True, gimp3: bool = True) -> dict:
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="gimp-openai-bench-") as tmp:
        work = Path(tmp)
        Env(work / "home")
        figures: dict = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
            "latency_s": LATENCY,
        }
        figures["startup_s"] = startup_seconds()
        with LocalServerHandle(("--latency", str(LATENCY))) as server:
            figures["host"] = bench_host_path(server, work, repeats)
            figures["cli"] = bench_cli(server, work, (1024, 4096) if quick else LAYERS)
            figures["cli_memory"] = bench_cli_memory(server, work, 4000 if quick else 8000)
        _host_figures(figures, work)
        figures["batch"] = bench_batch(work)
        figures["seamless"] = bench_seamless(work, repeats)
        figures["stream"] = bench_stream(rounds=1 if quick else 3)
        figures["ratelimit"] = batch_api_bench.bench_ratelimit(work)
        figures["batch_async"] = batch_api_bench.bench_batch_async(work)
        if gimp3:
            from tests.bench import gimp3_host

            figures["gimp3"] = [gimp3_host.measure(v) for v in ("3.0", "3.2")]
            figures["gimp3_overhead"] = [gimp3_host.overhead(v) for v in ("3.0", "3.2")]
        figures["load_avg_at_end"] = os.getloadavg()
    if faults:
        from tests.reliability import faults as F

        with tempfile.TemporaryDirectory() as tmp:
            Env(Path(tmp))
            rows = F.run_all()
        figures["fault_table"] = F.table(rows)
        figures["faults"] = [r.__dict__ for r in rows]
    return figures


def table(fig: dict) -> str:
    lines = [f"gimp-openai benchmarks {fig['date']} on {fig['machine']['platform']}, {fig['machine']['cpus']} CPUs, "
             f"load {fig['machine']['load_avg_at_start'][0]:.1f}; server latency {fig['latency_s']} s; engine "
             f"start-up (imports) {fig['startup_s']:.2f} s", ""]
    lines.append("Host path (job: place PNG + selection PNG), 1024² selection, n=1, align+tone on:")
    lines.append("layer   place      target     wall s  server s  overhead s  peak MB  upload B   /crop PNG(l6)"
                 "  /crop PNG(libpng l1)  whole layer/upload")
    for r in fig["host"]:
        lines.append(f"{r['layer']:>5}²  {r['place'][0]}x{r['place'][1]:<5} {r['target'][0]}x{r['target'][1]:<5} "
                     f"{r['wall_s']:6.2f}  {r['server_s']:8.2f}  {r['overhead_s']:10.2f}  {r['maxrss_mb']:7.0f}  "
                     f"{r['upload_bytes']:>9,}  {r['upload_ratio_level6']:13.2f}  {r['upload_ratio_libpng1']:20.2f}"
                     f"  {r['whole_layer_vs_upload']:18.1f}")
    r = fig["host"][-1]
    lines.append(f"PNG of the {r['target'][0]}x{r['target'][1]} request: the engine's upload encoder "
                 f"{r['crop_png_target_upload']:,} B in {r['encode_s_upload']:.2f} s, libpng level 1 "
                 f"{r['crop_png_target_libpng1']:,} B in {r['encode_s_libpng1']:.2f} s, zlib level 6 "
                 f"{r['crop_png_target_level6']:,} B in {r['encode_s_level6']:.2f} s")
    lines.append(f"overhead ratio 8000²/1024²: {fig['ratio_8000_1024']:.2f} (target <= 1.5; the 1024² layer clamps "
                 f"the context, so its place has 1/2.25 of the pixels); without interpreter start-up: "
                 f"{fig['ratio_8000_1024_without_startup']:.2f}; same place 8000²/4096²: "
                 f"{fig['ratio_8000_4096_same_place']:.2f}; overhead per place megapixel: "
                 + ", ".join(f"{r['layer']}² {r['overhead_s_per_place_mp']:.2f} s" for r in fig["host"]))
    m = fig["memory"]
    lines.append(f"Peak memory, 8000² layer edit (host path): {m['peak_mb']:.0f} MB; target 4 x {m['crop_rgba_mb']:.1f}"
                 f" MB + 150 = {m['target_mb']:.0f} MB")
    if "cli" not in fig:
        return "\n".join(lines)
    lines.append("")
    lines.append("CLI path (decodes the whole file, writes full-size PNG + .ora):")
    for r in fig["cli"]:
        lines.append(f"{r['layer']:>5}²  wall {r['wall_s']:6.2f} s  overhead {r['overhead_s']:6.2f} s  "
                     f"peak {r['maxrss_mb']:6.0f} MB")
    if fig.get("cli_memory"):
        lines += cli_memory_lines(fig["cli_memory"])
    b = fig["batch"]
    lines.append("")
    lines.append(f"Batch of 8, {b['latency_s']} s latency (dall-e-2 256², engine wall = first to last JSON line):")
    for c in (1, 4, 8):
        x = b[f"c{c}"]
        lines.append(f"  concurrency {c}: wall {x['wall_s']:.2f} s, engine {x['engine_wall_s']:.2f} s, ideal "
                     f"{x['ideal_s']:.0f} s -> {x['ratio_engine']:.2f} (process {x['ratio_wall']:.2f}); "
                     f"{x['max_parallel_starts_within_0.5s']} requests in flight at once")
    lines.append(f"  speed-up at 4 over sequential: {b['speedup_c4']:.2f} (process wall {b['speedup_c4_wall']:.2f});"
                 " target >= 3.5, ratio target <= 1.2")
    s = fig["seamless"]
    lines.append("")
    lines.append(seamless_line(s))
    lines.append("")
    if "stream" in fig:
        lines += [stream_line(fig["stream"]), ""]
    if "ratelimit" in fig or "batch_async" in fig:
        lines += [*batch_api_bench.lines(fig.get("ratelimit"), fig.get("batch_async")), ""]
    if fig.get("gimp3"):
        from tests.bench import gimp3_host

        lines += [gimp3_host.table(g) for g in fig["gimp3"]]
        lines += [gimp3_host.overhead_line(g) for g in fig.get("gimp3_overhead", [])]
    else:
        lines.append("Host-side time in real GIMP 3: not measured (--no-gimp3)")
    if "fault_table" in fig:
        lines += ["", "Fault matrix:", fig["fault_table"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench")
    parser.add_argument("--out", help="JSON file (default bench-results/bench-<date>.json)")
    parser.add_argument("--quick", action="store_true", help="one repetition, CLI without the 8000² file")
    parser.add_argument("--no-faults", action="store_true", help="skip the fault matrix table")
    parser.add_argument("--no-gimp3", action="store_true", help="skip the real GIMP 3 host timings (chroots)")
    parser.add_argument("--host-only", action="store_true",
                        help="only the host-path table (overhead per layer size, ratio, upload, peak memory)")
    parser.add_argument("--seamless-only", action="store_true",
                        help="only the seamless share (2048² place, gpt-like server, with vs without align+tone)")
    parser.add_argument("--cli-memory-only", action="store_true",
                        help="only the CLI big-image rows (8000² opaque and transparent edit: peak RSS, seconds)")
    parser.add_argument("--expand-only", action="store_true",
                        help="Expand Canvas figures only (old pixels kept, the step at the old edge)")
    parser.add_argument("--stream-only", action="store_true",
                        help="only the streaming figures (first preview, cost of streaming; 15 s latency)")
    parser.add_argument("--batch-api-only", action="store_true",
                        help="only the rate-limit pacing (40 edits at 20/min, ~1-2 min) and Batch API rows")
    parser.add_argument("--size", type=int, default=8000, help="with --cli-memory-only: the picture's side")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions of each host-path case (default 3)")
    args = parser.parse_args(argv)
    if args.seamless_only:
        figures = run_seamless_only(args.repeats or (1 if args.quick else 3))
        s = figures["seamless"]
        print(seamless_line(s) + f"; runs with {s['overhead_with_runs_s']}, without {s['overhead_without_runs_s']}, "
              f"after-response deltas {s['after_delta_runs_s']}")
        return 0
    if args.expand_only:
        from tests.bench import expand_bench

        return expand_bench.main()
    if args.stream_only:
        with tempfile.TemporaryDirectory(prefix="gimp-openai-bench-") as tmp:
            Env(Path(tmp) / "home")
            figures = bench_stream(rounds=args.repeats or (1 if args.quick else 3))
        print(stream_line(figures) + f"; plain runs {[round(x, 2) for x in figures['plain_runs_s']]}, streamed "
              f"{[round(x, 2) for x in figures['stream_runs_s']]}, previews at "
              f"{[[round(x, 2) for x in run] for run in figures['preview_times_s']]}")
        return 0
    if args.cli_memory_only:
        print("\n".join(cli_memory_lines(run_cli_memory_only(args.size, args.repeats or 1))))
        return 0
    if args.batch_api_only:
        with tempfile.TemporaryDirectory(prefix="gimp-openai-bench-") as tmp:
            Env(Path(tmp) / "home")
            rate = batch_api_bench.bench_ratelimit(Path(tmp))
            batch = batch_api_bench.bench_batch_async(Path(tmp))
        print("\n".join(batch_api_bench.lines(rate, batch)))
        stamp = f"bench-batchapi-{datetime.now():%Y%m%d-%H%M%S}.json"
        out = Path(args.out) if args.out else ROOT / "bench-results" / stamp
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"ratelimit": rate, "batch_async": batch}, indent=1))
        return 0
    if args.host_only:
        figures = run_host_only(args.repeats or (1 if args.quick else 3))
    else:
        figures = run_all(quick=args.quick, faults=not args.no_faults, gimp3=not args.no_gimp3)
    text = table(figures)
    print(text)
    out = Path(args.out) if args.out else ROOT / "bench-results" / f"bench-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1, default=str))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
