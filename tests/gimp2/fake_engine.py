"""Stands in for the engine's interpreter (`python -m gimp_openai plan|job|key`) in host tests that must not
depend on the network-facing engine: follows docs/architecture.md's protocol with simple deterministic
outputs (edit: red inside the selection; variation: inverted; generate: blue). Env: FAKE_ENGINE_LOG (calls),
FAKE_ENGINE_FAIL (item ids that fail, comma-separated), FAKE_ENGINE_CRASH=1 (die mid-job),
FAKE_ENGINE_GONE (a model id answered as shut down), FAKE_ENGINE_NOTICE (a path the plan's notice names),
FAKE_ENGINE_MAX_COST (the user's limit, $1 by default). Prices are flat, as the real engine's are for one
1024x1024 image: low $0.01, medium $0.05, high $0.20; auto is estimated as medium, up to high, and costs medium;
the model FAKE_UNPRICED ("local-model" by default) has no price (tokens only).
A job asking for previews (``partial_images`` k) gets, for an edit, a ``partial_place`` line (where they will go),
then k ``partial`` lines per item before its result, placed
like the result: preview j is gray j*60 inside the selection (edit) or everywhere (generate), with the
result's mask; FAKE_ENGINE_PARTIAL_LOG: a file each partial's PNG path is appended to just before its line."""

import json
import os
import sys

import numpy as np
from PIL import Image


def log(entry):
    path = os.environ.get("FAKE_ENGINE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def emit(obj):
    print(json.dumps(obj))
    sys.stdout.flush()


PER_IMAGE = {"low": 0.01, "medium": 0.05, "high": 0.20}
TOKENS = {"low": 272, "medium": 1056, "high": 4160}


def priced(model):
    return model != os.environ.get("FAKE_UNPRICED", "local-model")


def item_estimate(model, n, quality, size):
    q = quality if quality in PER_IMAGE else "medium"
    upper = "high" if quality == "auto" else q
    ok = priced(model)
    return {"model": model, "n": n, "size": "%dx%d" % tuple(size), "quality": quality, "quality_as": q,
            "input_tokens": 100, "output_tokens": n * TOKENS[q], "output_tokens_upper": n * TOKENS[upper],
            "usd": round(n * PER_IMAGE[q], 6) if ok else None,
            "usd_upper": round(n * PER_IMAGE[upper], 6) if ok else None}


def total_estimate(model, estimates, quality):
    ok = priced(model)
    usd = sum(e["usd"] or 0 for e in estimates) if ok else None
    upper = sum(e["usd_upper"] or 0 for e in estimates) if ok else None
    limit = float(os.environ.get("FAKE_ENGINE_MAX_COST", "1.0"))
    total = {"usd": usd, "usd_upper": upper, "input_tokens": sum(e["input_tokens"] for e in estimates),
             "output_tokens": sum(e["output_tokens"] for e in estimates),
             "images": sum(e["n"] for e in estimates), "priced": ok, "max_cost": limit,
             "over_limit": bool(upper is not None and upper > limit), "model": model, "quality": quality,
             "text": "about $%.4f" % usd if ok else "no price known for %s" % model}
    sizes = set(e["size"] for e in estimates)
    if len(sizes) == 1:
        total["size"] = sizes.pop()
    return total


def item_cost(model, n, quality):
    q = quality if quality in PER_IMAGE else "medium"
    return {"usd": round(n * PER_IMAGE[q], 6) if priced(model) else None, "input_tokens": 100,
            "output_tokens": n * TOKENS[q], "model": model, "price_as_of": "2026-04-21" if priced(model) else None,
            "requests": 1}


def plan(path, tag=None, data=None):
    data = data if data is not None else json.load(open(path))
    model = data.get("model") or "gpt-image-2"
    n, quality = int(data.get("n", 1)), data.get("quality") or "auto"
    estimates = []
    items = []
    for it in data["items"]:
        lay, sel = it["layer"], it.get("selection_bounds") or it["layer"]
        pad = int(round(data.get("context_padding", 0.25) * max(sel["width"], sel["height"])))
        x1, y1 = max(lay["x"], sel["x"] - pad), max(lay["y"], sel["y"] - pad)
        x2 = min(lay["x"] + lay["width"], sel["x"] + sel["width"] + pad)
        y2 = min(lay["y"] + lay["height"], sel["y"] + sel["height"] + pad)
        place = {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1}
        estimate = item_estimate(model, n, quality, (place["width"], place["height"]))
        estimates.append(estimate)
        items.append({"id": it["id"], "place": place, "request": place, "target": [place["width"], place["height"]],
                      "estimate": estimate})
    if data.get("operation") == "generate" and not items:
        size = data.get("size") if data.get("size") not in (None, "", "auto") else None
        canvas = data.get("canvas")
        wh = [int(v) for v in size.split("x")] if size else ([canvas["width"], canvas["height"]] if canvas else
                                                             [1024, 1024])
        estimates.append(item_estimate(model, n, quality, wh))
    answer = {"ok": True, "model": model, "items": items, "estimate": total_estimate(model, estimates, quality)}
    if os.environ.get("FAKE_ENGINE_NOTICE"):  # an earlier cancelled run's paid image, as the engine says it
        answer["notices"] = [{"code": "cancelled_results", "message": "A cancelled run had already received 1 "
                              "image (paid for); it is saved here:\n  " + os.environ["FAKE_ENGINE_NOTICE"]}]
    if tag:
        answer["type"] = tag
    emit(answer)


def partials(data, folder, out, it):
    """The item's streamed previews, as the engine's ``partial`` lines (docs/architecture.md)."""
    count = int(data.get("partial_images") or 0)
    if not count or data["operation"] == "variation":
        return
    mask_path = None
    if data["operation"] == "edit":  # as the engine does once the request is sent: where the previews will go
        sel = np.asarray(Image.open(os.path.join(folder, it["selection"])).convert("L"))
        line = {"type": "partial_place", "id": it["id"], "x": it["place"]["x"], "y": it["place"]["y"],
                "width": sel.shape[1], "height": sel.shape[0]}
        if data.get("add_mask", True):
            mask_path = os.path.join(out, "%s-partial-mask.png" % it["id"])
            Image.fromarray(sel, "L").save(mask_path)
            line["mask_png"] = mask_path
        emit(line)
    for j in range(1, count + 1):
        if data["operation"] == "generate":
            canvas = data.get("canvas") or {"width": 64, "height": 48}
            px = np.full((canvas["height"], canvas["width"], 4), j * 60, np.uint8)
            px[..., 3] = 255
            x = y = 0
            mask = None
        else:
            px = np.asarray(Image.open(os.path.join(folder, it["image"])).convert("RGBA")).copy()
            mask = np.asarray(Image.open(os.path.join(folder, it["selection"])).convert("L")).copy()
            px[mask > 0] = (j * 60, j * 60, j * 60, 255)
            x, y = it["place"]["x"], it["place"]["y"]
            if not data.get("add_mask", True):
                px[..., 3] = (px[..., 3].astype(int) * mask // 255).astype(np.uint8)
                mask = None
        layer_png = os.path.join(out, "%s-partial-%d.png" % (it["id"], j))
        Image.fromarray(px, "RGBA").save(layer_png)
        line = {"type": "partial", "id": it["id"], "index": j - 1, "image": 1, "layer_png": layer_png,
                "x": x, "y": y, "width": px.shape[1], "height": px.shape[0]}
        if mask is not None:
            if mask_path is None:
                mask_path = os.path.join(out, "%s-partial-mask.png" % it["id"])
                Image.fromarray(mask, "L").save(mask_path)
            line["mask_png"] = mask_path
        if os.environ.get("FAKE_ENGINE_PARTIAL_LOG"):
            with open(os.environ["FAKE_ENGINE_PARTIAL_LOG"], "a") as f:
                f.write(layer_png + "\n")
        emit(line)


def job(path):
    folder = os.path.dirname(path)
    data = json.load(open(path))
    out = os.path.join(folder, data["out_dir"])
    os.makedirs(out, exist_ok=True)
    fail = set(filter(None, os.environ.get("FAKE_ENGINE_FAIL", "").split(",")))
    results = []
    items = data["items"] or [{"id": "generate"}]
    if data["model"] == os.environ.get("FAKE_ENGINE_GONE"):  # a shut-down model: every item fails alike
        error = {"code": "model_not_found", "message": "The model %s was shut down on 2026-11-01." % data["model"],
                 "hint": "Use gpt-image-2.", "replacement": "gpt-image-2", "saved": []}
        results = [{"id": it["id"], "ok": False, "outputs": [], "error": error} for it in items]
        emit({"type": "result", "ok": False, "items": results, "error": error})
        return
    for it in items:
        emit({"type": "progress", "item": it["id"], "phase": "waiting", "fraction": 0.5,
              "message": "Waiting for %s (1 s of ~60 s)" % data["model"]})
        partials(data, folder, out, it)
        if os.environ.get("FAKE_ENGINE_CRASH"):
            sys.stderr.write("Traceback: killed mid-job\n")
            sys.exit(1)
        if it["id"] in fail:
            saved = os.path.join(out, it["id"] + "-paid.png")
            Image.new("RGBA", (4, 4)).save(saved)
            results.append({"id": it["id"], "ok": False, "outputs": [], "error": {
                "code": "server_error", "message": "The server failed (500) for " + it["id"],
                "hint": "Try again in a minute.", "saved": [saved]}})
            continue
        outputs = []
        for k in range(data["n"]):
            if data["operation"] == "generate":
                canvas = data.get("canvas") or {"width": 64, "height": 48}  # the engine covers a canvas
                px = np.zeros((canvas["height"], canvas["width"], 4), np.uint8)
                px[..., 2] = 255
                px[..., 3] = 255
                mask = np.full(px.shape[:2], 255, np.uint8)
                x = y = 0
            else:
                px = np.asarray(Image.open(os.path.join(folder, it["image"])).convert("RGBA")).copy()
                if data["operation"] == "edit":
                    mask = np.asarray(Image.open(os.path.join(folder, it["selection"])).convert("L")).copy()
                    px[mask > 0] = (255, 0, 0, 255)
                else:
                    px[..., :3] = 255 - px[..., :3]
                    mask = np.full(px.shape[:2], 255, np.uint8)
                if not data.get("add_mask", True):
                    px[..., 3] = (px[..., 3].astype(int) * mask // 255).astype(np.uint8)
                x, y = it["place"]["x"], it["place"]["y"]
            lp = os.path.join(out, "%s-%d.png" % (it["id"], k))
            mp = os.path.join(out, "%s-%d-mask.png" % (it["id"], k))
            Image.fromarray(px, "RGBA").save(lp)
            Image.fromarray(mask, "L").save(mp)
            outputs.append({"index": k, "name": "x", "layer_png": lp, "mask_png": mp, "x": x, "y": y,
                            "width": px.shape[1], "height": px.shape[0], "history_png": lp,
                            "request_id": "req-%s-%d" % (it["id"], k),
                            "path": {"edit": "edit", "variation": "variation-edit"}.get(data["operation"],
                                                                                        "generate"),
                            "notes": ""})
        emit({"type": "progress", "item": it["id"], "phase": "done", "fraction": 1.0, "message": "done"})
        results.append({"id": it["id"], "ok": True, "outputs": outputs, "error": None, "model": data["model"],
                        "cost": item_cost(data["model"], data["n"], data.get("quality") or "auto")})
    ok = all(r["ok"] for r in results)
    costs = [r["cost"] for r in results if r.get("cost")]
    total = None
    if costs:
        usds = [c["usd"] for c in costs]
        total = {"usd": None if None in usds else round(sum(usds), 6), "model": data["model"],
                 "input_tokens": sum(c["input_tokens"] for c in costs),
                 "output_tokens": sum(c["output_tokens"] for c in costs), "requests": len(costs)}
    emit({"type": "result", "ok": ok, "items": results, "error": None if ok else {"message": "some failed"},
          "model": data["model"], "cost": total})


def session():
    """`session`: plan and job requests as JSON lines on stdin, each logged like a call of its own."""
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("cmd") == "done":  # the host put the results in the image: nothing to answer
            continue
        if request.get("cmd") == "estimate":  # a dialog's figure: logged apart, answered like a plan
            log({"argv": sys.argv[:3] + ["estimate", ""], "estimate": request["plan"], "session": True,
                 "pid": os.getpid()})
            plan(None, tag="estimate", data=request["plan"])
            continue
        log({"argv": sys.argv[:3] + [request["cmd"], request["path"]], "key": os.environ.get("OPENAI_API_KEY"),
             "stdin": None, "session": True, "pid": os.getpid()})
        if request["cmd"] == "plan":
            plan(request["path"], tag="plan")
        else:
            job(request["path"])


def main():
    args = sys.argv[1:]
    if args[2:3] == ["session"]:
        session()
        return 0
    log({"argv": sys.argv, "key": os.environ.get("OPENAI_API_KEY"),
         "stdin": None if args[:1] == ["-m"] and args[2:3] in (["plan"], ["job"]) else sys.stdin.read()})
    if args[0] == "-c":
        emit({"ok": True})
        return 0
    assert args[:2] == ["-m", "gimp_openai"], args
    cmd = [a for a in args[2:] if not a.startswith("--")]
    if cmd[0] == "plan":
        plan(cmd[1])
    elif cmd[0] == "job":
        job(cmd[1])
    elif cmd[0] == "models":
        emit({"ok": True, "base_url": "http://127.0.0.1:9/v1", "from_cache": False,
              "models": [{"id": "gpt-image-2"}, {"id": "dall-e-2", "shutdown_date": "2026-12-01"}]})
    elif cmd[:2] == ["config", "show"]:  # what is saved: OpenAI's server (shown as empty), a model, a folder
        emit({"ok": True, "settings": {"base_url": "https://api.openai.com/v1", "default_model": "gpt-image-2",
                                       "history_dir": "/saved/history", "max_cost": 3.0}})
    elif cmd[0] == "key":
        emit({"ok": True, "stored_in": "keyring"})
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
