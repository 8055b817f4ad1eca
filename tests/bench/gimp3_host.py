"""Host-side time in real GIMP 3 (export + insert) for a 1024² selection in 1024², 4096² and 8000² layers,
through the GIMP 3 chroot harness (tests/support/gimp3.py) against the local server. The host records its own
export and insert times (``GIMP_OPENAI_HOST_TIMINGS``). ``python -m tests.bench.gimp3_host [3.0|3.2]``; used
by ``scripts/bench --gimp3``. ``python -m tests.bench.gimp3_host preview [3.0|3.2] [LATENCY]``: the live preview
(``measure_preview``). Skips (returns None with the reason) when no chroot is ready."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tests.bench.run import served_seconds
from tests.support import gimp3 as G

SCRIPT = r'''
import json, os, time
import gi
gi.require_version("Gegl", "0.4")
from gi.repository import Gimp, Gegl
Gegl.init(None)
pdb = Gimp.get_pdb()
SEL = 1024
for size in SIZES:
    img = Gimp.Image.new(size, size, Gimp.ImageBaseType.RGB)
    lay = Gimp.Layer.new(img, "photo", size, size, Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL)
    img.insert_layer(lay, None, 0)
    off = (size - SEL) // 2
    # detail (noise) where the host will export: the planned place is the selection plus 25 % context
    pad = SEL // 4
    x0, y0 = max(0, off - pad), max(0, off - pad)
    w = min(size, off + SEL + pad) - x0
    buf = lay.get_buffer()
    rows = 256
    for y in range(y0, y0 + w, rows):
        h = min(rows, y0 + w - y)
        buf.set(Gegl.Rectangle.new(x0, y, w, h), "R'G'B'A u8", os.urandom(w * h * 4)[:])
    buf.flush()
    img.select_rectangle(Gimp.ChannelOps.REPLACE, off, off, SEL, SEL)
    proc = pdb.lookup_procedure("python-fu-openai-edit-selection")
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", img)
    config.set_core_object_array("drawables", [lay])
    config.set_property("prompt", "a red kite")
    config.set_property("align", False)
    config.set_property("tone-match", False)
    config.set_property("partial-images", 0)  # previews are measured on their own (measure_preview)
    t = time.time()
    result = proc.run(config)
    secs = time.time() - t
    status = result.index(0).value_nick
    err = result.index(1) if result.length() > 1 and status != "success" else None
    print("RES " + json.dumps({"size": size, "status": status, "error": err, "seconds": secs, "t0": t}), flush=True)
    img.delete()
    time.sleep(2.0)  # an artist's pause: the engine a run leaves behind is ready for the next (~0.5 s)
'''


def _run_in_gimp(version: str, script: str, latency: float, env: dict, timeout: float,
                 server_url: str | None = None) -> tuple[list[dict], list[dict], list[dict]] | str:
    """Install the plug-in into a fresh work folder of the GIMP ``version`` chroot and run ``script`` (GIMP
    batch Python) against the local server (``--latency``) or ``server_url``: (the script's "RES " lines, the
    host's timings file, the server's image requests), or why it could not run."""
    problem = G.chroot_problem(version)
    if problem:
        return problem
    import os

    from tests.conftest import FAKE_KEY
    from tests.reliability.harness import image_requests
    from tests.support.local_server import LocalServerHandle

    with tempfile.TemporaryDirectory(prefix="bench-gimp3-") as tmp, \
            LocalServerHandle(("--latency", str(latency))) as srv:
        work = Path(tmp) / "work"
        work.mkdir()
        os.chmod(tmp, 0o755)
        chroot = G.GimpChroot(version=version, root=G.CHROOT_ROOT / G.SUITES[version], work=work)
        install = chroot.run(["python3", f"{G.REPO_INSIDE}/scripts/install.py", "--venv", "/gimp-openai-work/venv",
                              "--system-site-packages", "--no-deps"], timeout=300)
        if install.returncode != 0:
            return f"installer failed in the chroot: {install.stderr[-500:]}"
        timings = work / "timings.jsonl"
        env = {"OPENAI_BASE_URL": server_url or srv.url, "OPENAI_API_KEY": FAKE_KEY,
               "GIMP_OPENAI_HOST_TIMINGS": "/gimp-openai-work/timings.jsonl", **env}
        run = chroot.python(script, env=env, timeout=timeout)
        lines = [json.loads(line[4:]) for line in run.stdout.splitlines() if line.startswith("RES ")]
        if not lines:
            return f"GIMP run failed: {run.stdout[-800:]} {run.stderr[-800:]}"
        entries = [json.loads(x) for x in timings.read_text().splitlines()] if timings.exists() else []
        return lines, entries, image_requests(srv) if server_url is None else []


def measure(version: str = "3.0", server_url: str | None = None, sizes=(1024, 4096, 8000),
            latency: float = 1.0, warm_seconds: float = 60.0) -> dict | str:
    """{"version", "rows": [{size, export_s, insert_s, procedure_s, server_s, overhead_s}]} or the reason it could
    not run. ``overhead_s``: the whole procedure less the server's time (``run.served_seconds``)."""
    # the first run starts the engine; later ones find it kept warm (as in GIMP, until warm_seconds pass)
    ran = _run_in_gimp(version, SCRIPT.replace("SIZES", repr(tuple(sizes))), latency,
                       {"GIMP_OPENAI_WARM_SECONDS": str(int(warm_seconds))}, 900, server_url)
    if isinstance(ran, str):
        return ran
    results, entries, served = ran
    if len(results) != len(sizes):
        return f"GIMP run incomplete: {results}"
    exports = [e["seconds"] for e in entries if e["what"] == "export"]
    inserts = [e["seconds"] for e in entries if e["what"] == "insert"]
    traces = [e for e in entries if e["what"] == "trace"]
    rows = []
    for k, res in enumerate(results):
        t0, t1 = res["t0"], res["t0"] + res["seconds"]
        timeline = [(e["event"], round(e["t"] - t0, 3)) for e in traces if t0 <= e["t"] <= t1]
        server_s = served_seconds(served[k], latency) if k < len(served) else None
        rows.append({"size": res["size"], "status": res["status"], "error": res["error"],
                     "procedure_s": res["seconds"], "export_s": exports[k] if k < len(exports) else None,
                     "insert_s": inserts[k] if k < len(inserts) else None, "server_s": server_s,
                     "overhead_s": res["seconds"] - server_s if server_s is not None else None,
                     "timeline": timeline})
    return {"version": version, "rows": rows}


def overhead(version: str = "3.0", repeats: int = 3) -> dict | str:
    """The issue's figure: a 1024² selection in a 4096² layer, align/tone off, the whole procedure less the
    server's time: the first run (the engine starts) and the median of ``repeats`` runs after it (kept warm)."""
    import statistics

    result = measure(version, sizes=(4096,) * (repeats + 1), latency=0.0)
    if isinstance(result, str):
        return result
    ok = [r for r in result["rows"] if r["status"] == "success" and r["overhead_s"] is not None]
    if len(ok) != repeats + 1:
        return f"runs failed: {result['rows']}"
    rows = [r["overhead_s"] for r in ok]
    middle = sorted(ok[1:], key=lambda r: r["overhead_s"])[len(ok[1:]) // 2]
    return {"version": version, "first_s": rows[0], "warm_median_s": statistics.median(rows[1:]), "warm_s": rows[1:],
            "median_run": _phases(middle)}


def _phases(row: dict) -> dict:
    """Where the median warm run's time went (s): GIMP starting the plug-in and its modules, plan and export,
    the engine before the request, the server, the engine after it, the insert, the end of the run."""
    at = {}
    for event, t in row["timeline"]:
        key = " ".join(event.split(" ")[:2]) if event.startswith(("engine ", "send ")) else event
        at.setdefault(key, t)
        if key == "engine answer":
            at["last answer"] = t
    try:
        return {"start": at["run"], "plan+export": at["send job"] - at["run"],
                "engine before": at["engine waiting"] - at["send job"], "server": row["server_s"],
                "engine after": at["last answer"] - at["engine waiting"] - row["server_s"],
                "insert": at["inserted"] - at["last answer"], "end": row["procedure_s"] - at["inserted"]}
    except KeyError as missing:
        return {"timeline incomplete": str(missing)}


def overhead_line(result: dict | str) -> str:
    if isinstance(result, str):
        return f"GIMP 3 overhead: not measured ({result})"
    runs = ", ".join(f"{x:.2f}" for x in result["warm_s"])
    return (f"GIMP {result['version']}: 1024² selection in a 4096² layer, procedure less the server: first run "
            f"{result['first_s']:.2f} s (engine started), then median {result['warm_median_s']:.2f} s ({runs}; "
            f"engine kept warm) [target <= 0.8 s]; the median run: "
            + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in result.get("median_run", {}).items()))


def table(result: dict | str) -> str:
    if isinstance(result, str):
        return f"GIMP 3 host-side time: not measured ({result})"
    lines = [f"GIMP {result['version']} host side (1024² selection, n=1, align/tone off; server latency 1 s; the "
             f"first row starts the engine, later rows find it kept warm):"]
    for r in result["rows"]:
        ex = f"{r['export_s'] * 1000:.0f} ms" if r["export_s"] is not None else "-"
        ins = f"{r['insert_s'] * 1000:.0f} ms" if r["insert_s"] is not None else "-"
        over = f", less the server: {r['overhead_s']:.2f} s" if r.get("overhead_s") is not None else ""
        lines.append(f"  {r['size']:>5}² layer: export {ex}, insert {ins}, whole procedure {r['procedure_s']:.2f} s"
                     f"{over} [{r['status']}{': ' + str(r['error']) if r['error'] else ''}]")
    return "\n".join(lines)


PREVIEW_SCRIPT = r'''
import json, os, time
import gi
gi.require_version("Gegl", "0.4")
from gi.repository import Gimp, Gegl
Gegl.init(None)
pdb = Gimp.get_pdb()
SEL, size = 1024, LAYER
img = Gimp.Image.new(size, size, Gimp.ImageBaseType.RGB)
lay = Gimp.Layer.new(img, "photo", size, size, Gimp.ImageType.RGBA_IMAGE, 100, Gimp.LayerMode.NORMAL)
img.insert_layer(lay, None, 0)
off = (size - SEL) // 2
buf = lay.get_buffer()
for y in range(0, size, 256):
    buf.set(Gegl.Rectangle.new(0, y, size, 256), "R'G'B'A u8", os.urandom(size * 256 * 4))
buf.flush()
img.select_ellipse(Gimp.ChannelOps.REPLACE, off, off, SEL, SEL)
img.clean_all()
proc = pdb.lookup_procedure("python-fu-openai-edit-selection")
config = proc.create_config()
config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
config.set_property("image", img)
config.set_core_object_array("drawables", [lay])
config.set_property("prompt", "a red kite")
config.set_property("partial-images", 3)
t = time.time()
result = proc.run(config)
end = time.time()
status = result.index(0).value_nick
print("RES " + json.dumps({"status": status, "t0": t, "t1": end,
                           "error": result.index(1) if status != "success" else None}), flush=True)
'''


def measure_preview(version: str = "3.0", latency: float = 20.0, layer: int = 2048) -> dict | str:
    """The live preview in real GIMP 3 against the local server streaming 3 previews over ``latency`` seconds:
    a 1024² elliptic selection in a ``layer``² layer (the previews are 1536² with the context), default
    options. Times from the procedure's call: the first preview's pixels in GIMP (the host's record, taken
    after the layer's update and the displays' flush), and the procedure's end (the result inserted); the host's
    cost of each preview (reading the engine's PNG, the layer's buffer, the update, the flush) and of making the
    preview layer and its mask ahead, while the model works (``ready_ms``, when it was made: ``ready_at_s``)."""
    ran = _run_in_gimp(version, PREVIEW_SCRIPT.replace("LAYER", str(layer)), latency, {}, 300 + 3 * latency)
    if isinstance(ran, str):
        return ran
    lines, entries, _served = ran
    if lines[0]["status"] != "success":
        return f"GIMP run failed: {lines}"
    res = lines[0]
    previews = [e for e in entries if e["what"] == "preview"]
    if not previews:
        return "no preview was shown"
    first = previews[0]["at"] - res["t0"]
    final = res["t1"] - res["t0"]
    return {"version": version, "latency_s": latency, "layer": layer, "first_preview_s": first, "final_s": final,
            "first_share": first / final, "previews": len(previews),
            "update_ms": [round(e["seconds"] * 1000, 1) for e in previews],
            "ready_ms": [round(e["seconds"] * 1000, 1) for e in entries if e["what"] == "preview-ready"],
            "ready_at_s": [round(e["at"] - res["t0"], 2) for e in entries if e["what"] == "preview-ready"],
            "remove_ms": [round(e["seconds"] * 1000, 1) for e in entries if e["what"] == "end-preview"],
            "insert_ms": [round(e["seconds"] * 1000, 1) for e in entries if e["what"] == "insert"]}


def preview_line(r: dict | str) -> str:
    if isinstance(r, str):
        return f"GIMP 3 live preview: not measured ({r})"
    return (f"GIMP {r['version']} live preview (1024² selection in a {r['layer']}² layer, server latency "
            f"{r['latency_s']:g} s, 3 previews): first preview in GIMP at {r['first_preview_s']:.2f} s = "
            f"{100 * r['first_share']:.1f}% of the {r['final_s']:.2f} s to the result (target <= 30%); host cost per "
            f"preview {r['update_ms']} ms (target <= 150; the layer and its mask made ahead in {r['ready_ms']} ms at "
            f"{r['ready_at_s']} s, while waiting), removal "
            f"{r['remove_ms']} ms, insert {r['insert_ms']} ms")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["preview"]:
        version = args[1] if len(args) > 1 else "3.0"
        latency = float(args[2]) if len(args) > 2 else 20.0
        print(preview_line(measure_preview(version, latency)))
    else:
        version = args[0] if args else "3.0"
        print(overhead_line(overhead(version)))
        print(table(measure(version)))


if __name__ == "__main__":
    main()
