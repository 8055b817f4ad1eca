"""``gimp-openai batch --async``, ``generate --async`` and ``batch status|collect|list|cancel ID``: the Batch API
from the command line (edits and GPT variations of images; generations of one prompt or a file of prompts).

Submitting builds each item's request with the synchronous code (batchapi.CapturingClient), shows the estimate at
the Batch API's half price, records the submission, uploads one JSONL file and creates the batch. Collecting
(after any restart) reads the output and error files and runs each answered item through the same code as a
synchronous ``batch`` (every returned image into history first, then the full-size PNGs and the .ora), marking
each item collected as soon as its outputs are written, so an interrupted collect resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import batchapi
from . import errors as E

ACTIONS = ("status", "collect", "list", "cancel")
#: The options a collect needs to composite as the submission planned (recorded in the state file).
RECORDED = ("operation", "prompt", "n", "quality", "size", "background", "feather", "padding", "no_align",
            "no_tone_match", "blend", "variation_prompt", "complexity", "rect", "ellipse", "model", "name")


def _client_parts(settings: Any, replay: bool = False) -> tuple[batchapi.BatchEngine, batchapi.BatchApi]:
    from .client import ClientConfig
    from .session import resolve_key

    config = ClientConfig.from_settings(settings, api_key=resolve_key(settings))
    client_type = batchapi.ReplayClient if replay else batchapi.CapturingClient
    engine = batchapi.BatchEngine(settings, client_type(config))
    return engine, batchapi.BatchApi(engine.client)


def _requests(args: argparse.Namespace, engine: batchapi.BatchEngine,
              model: str) -> Iterator[tuple[str, dict[str, Any], Callable[[], Any]]]:
    """Each item of the submission: what names it in messages, its record (what a collect needs to write its
    outputs as a synchronous run does) and the synchronous code that makes its request (captured, not sent)."""
    from . import cli, operations

    if args.operation == "generate":
        prompts = cli.generate_prompts(args)
        for prompt, stem in zip(prompts, cli.generation_stems(args, len(prompts)), strict=True):

            def generation(prompt: str = prompt, stem: str = stem) -> Any:
                return operations.generate(engine, cli.options_from(args, model, prompt), item=stem)

            yield f"prompt {prompt[:60]!r}", {"label": stem, "prompt": prompt, "stem": stem}, generation
        return
    masks = list(args.mask or [None] * len(args.images))
    for image, mask, label in zip(args.images, masks, cli.item_labels(args.images), strict=True):

        def capture(image: str = image, mask: str | None = mask, label: str = label) -> Any:
            pixels, _notes = cli.load_image(image)
            return cli._operate(args, engine, model, pixels, image, mask, lambda event: None, label)  # noqa: SLF001

        try:
            record = {"label": label, "source": str(Path(image).resolve()),
                      "source_sha256": batchapi.file_sha256(image), "mask": str(Path(mask).resolve()) if mask else None,
                      "mask_sha256": batchapi.file_sha256(mask) if mask else None}
        except OSError:
            record = {"label": label, "source": image}  # unreadable: load_image says why, and it is not sent
        yield image, record, capture


def submit(args: argparse.Namespace) -> int:
    """``batch --async`` and ``generate --async``: the requests as one batch; ``--wait``: then wait and collect."""
    from . import cli

    generation = args.command == "generate"
    if generation:
        cli.generate_prompts(args)  # refused before anything is set up
        if getattr(args, "reference", None):
            raise E.InvalidInputError("Generations with --reference cannot be batched (they are edits requests).",
                                      hint="Run them without --async.")
        if getattr(args, "partial_images", 0):
            raise E.InvalidInputError("The Batch API does not stream: --partial-images cannot go with --async.")
        args.operation = "generate"
    elif args.operation == "edit":
        if not (args.prompt or "").strip():
            raise E.InvalidInputError("The prompt is empty.", hint="Pass --prompt 'what the selections should become'.")
        if args.mask and len(args.mask) != len(args.images):
            raise cli.UsageError(f"{len(args.images)} images but {len(args.mask)} --mask files; give one per image.")
        if not args.mask and not args.rect:
            raise cli.UsageError("Batch edit needs --mask (once per image) or --rect X,Y,W,H (the same for all).")
    if getattr(args, "markup", None):
        raise E.InvalidInputError("Markup edits cannot be batched.", hint="Run them without --async.")
    settings = cli.load_settings_for(args)
    out = cli.out_dir_for(args)
    engine, api = _client_parts(settings)
    engine.cost_gate = cli.CostGate(cli.cost_limit(args, settings), yes=bool(args.yes), can_ask=cli.interactive(),
                                    quiet=bool(args.quiet))
    model = cli.pick_model(engine, args, args.operation)
    cli.check_size_option(args, engine, model)
    args.model = model
    lines: list[tuple[str, str, dict[str, Any]]] = []
    items: list[dict[str, Any]] = []
    refused: list[tuple[str, E.GimpOpenAIError]] = []
    endpoint = ""
    for number, (what, item, capture) in enumerate(_requests(args, engine, model), start=1):
        custom_id = f"item-{number}-{item['label']}"[:64]
        try:
            capture()
            raise E.GimpOpenAIError("Internal: the operation sent nothing.")
        except batchapi.Captured as captured:
            lines.append((custom_id, captured.endpoint, captured.body))
            endpoint = captured.endpoint
        except E.GimpOpenAIError as exc:
            refused.append((what, exc))
            continue
        items.append({"custom_id": custom_id, **item, "collected": None})
    if not lines:
        for what, problem in refused:
            print(f"gimp-openai: {what}: error: {problem.message}", file=sys.stderr)
        raise E.InvalidInputError(f"No {'prompt' if generation else 'image'} of the batch could be prepared; nothing "
                                  "was sent.")
    options = {name: getattr(args, name, None) for name in RECORDED}
    options["rect"] = list(args.rect) if getattr(args, "rect", None) else None
    state = batchapi.BatchState.new(
        base_url=batchapi.safe_base_url(str(settings.base_url)), endpoint=batchapi.ENDPOINT_PATHS[endpoint],
        model=model, out_dir=str(out), options=options, items=items,
        refused=[{"source": image, "error": problem.to_dict()} for image, problem in refused],
        estimate_usd=round(engine.cost_gate.total, 6))
    state.save()
    data = batchapi.jsonl(lines)
    file_id = api.upload(data, f"{state.data['local_id']}.jsonl")
    state.update(input_file_id=file_id, status="uploaded")
    batch = api.create(file_id, state.data["endpoint"], {"gimp_openai": state.data["local_id"]})
    state.update(batch_id=batch["id"], status=str(batch.get("status") or "validating"))
    answer = {"ok": True, "batch_id": batch["id"], "local_id": state.data["local_id"], "items": len(items),
              "refused": state.data["refused"], "status": state.data["status"], "state_file": str(state.path),
              "estimate_usd": state.data["estimate_usd"]}
    if args.json and not args.wait:
        print(json.dumps(answer))
    elif not args.json:
        print(f"batch {batch['id']}: {len(items)} request(s) submitted at the Batch API's price (half); results "
              "within 24 hours.")
        print(f"  collect them with: gimp-openai batch collect {batch['id']}")
        for image, problem in refused:
            print(f"gimp-openai: {image}: not sent: {problem.message}", file=sys.stderr)
    if args.wait:
        return collect_state(state, args.json, quiet=bool(args.quiet), wait=True, poll=args.poll)
    return 0


def collect_state(state: batchapi.BatchState, as_json: bool, *, quiet: bool, wait: bool, poll: float) -> int:
    """Download the batch's answers and composite every item not collected yet, as a synchronous run does."""
    from . import cli
    from .settings import load_settings

    settings = load_settings()
    settings.base_url = state.data["base_url"]
    engine, api = _client_parts(settings, replay=True)
    out = Path(state.data["out_dir"])
    engine.fallback_dirs = [out]
    batch_id = state.data.get("batch_id")
    if not batch_id:
        raise E.GimpOpenAIError(f"Submission {state.data['local_id']} never reached the server (status "
                                f"{state.data.get('status')}); nothing was paid. Submit it again.")

    def shown(batch: dict[str, Any]) -> None:
        counts = batch.get("request_counts") or {}
        if not quiet:
            print(f"batch {batch_id}: {batch.get('status')} ({counts.get('completed', 0)} done, "
                  f"{counts.get('failed', 0)} failed of {counts.get('total', '?')})", file=sys.stderr, flush=True)

    batch = (batchapi.wait_until_finished(api, batch_id, poll=poll, timeout=None, on_status=shown) if wait
             else api.retrieve(batch_id))
    state.update(status=str(batch.get("status")))
    if batch.get("status") not in batchapi.FINISHED:
        shown(batch)
        if as_json:
            print(json.dumps({"ok": False, "batch_id": batch_id, "status": batch.get("status"), "finished": False}))
        return cli.EXIT_FAILED
    options = state.data["options"]
    model = state.data["model"]
    limit = batchapi.output_limit(model, getattr(settings, "model_rules", None), len(state.data["items"]),
                                  int(options.get("n") or 1))
    records: dict[str, dict[str, Any]] = {}
    failures: dict[str, dict[str, Any]] = {}
    if batch.get("output_file_id"):
        records = batchapi.read_lines(api.content(str(batch["output_file_id"]), limit))
    if batch.get("error_file_id"):
        failures = batchapi.read_lines(api.content(str(batch["error_file_id"]), limit))
    generation = options.get("operation") == "generate"
    args = argparse.Namespace(command="generate" if generation else "batch", json=as_json, quiet=True, mask=None,
                              reference=None, markup=None, partial_images=0,
                              **{k: v for k, v in options.items() if k not in ("rect",)})
    args.rect = tuple(options["rect"]) if options.get("rect") else None
    lock = __import__("threading").Lock()
    results: list[Any] = []

    def one(item: dict[str, Any]) -> Any:
        if item.get("collected"):
            return ("already", item)
        record = records.get(item["custom_id"])
        if record is None:
            failed = failures.get(item["custom_id"])
            if failed is not None:
                return ("failed", item, batchapi.line_error(failed, model, engine.client.config.api_key))
            return ("failed", item, E.APIError(f"The batch ended ({batch.get('status')}) without answering this "
                                               "request; nothing was charged for it."))
        try:
            engine.client.use(record)  # type: ignore[attr-defined]
            if generation:
                written = cli.generate_one(args, engine, model, out, item["prompt"], item["stem"],
                                           lambda event: None, item["label"])
            else:
                _check_unchanged(item)
                written = cli.run_one(args, engine, model, out, item["source"], item.get("mask"),
                                      lambda event: None, item["label"])
        except E.GimpOpenAIError as exc:
            return ("failed", item, exc)
        finally:
            engine.client.use(None)  # type: ignore[attr-defined]
        with lock:
            item["collected"] = {"pngs": [str(p) for p in written.pngs], "ora": str(written.ora) if written.ora
                                 else None, "history": [str(o.history_png) for o in written.outputs]}
            state.save()
        return ("done", item, written)

    concurrency = max(1, min(int(getattr(settings, "concurrency", 4) or 4), 8))
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, state.data["items"]))
    done = [r[2] for r in results if r[0] == "done"]
    already = [r[1] for r in results if r[0] == "already"]
    failed = [(r[1], r[2]) for r in results if r[0] == "failed"]
    state.update(status=str(batch.get("status")), collected_at=_now())
    if as_json:
        total = cli.total_cost(done)
        print(json.dumps({"ok": not failed, "batch_id": batch_id, "status": batch.get("status"),
                          "results": [cli._written_dict(w) for w in done],  # noqa: SLF001
                          "already_collected": [{**_named(i), **i["collected"]} for i in already],
                          "failed": [{**_named(i), "custom_id": i["custom_id"], "error": e.to_dict()}
                                     for i, e in failed],
                          "cost": total.to_dict() if total is not None else None}, ensure_ascii=False))
    else:
        cli.report(done, argparse.Namespace(json=False))
        for item in already:
            print(f"{item['label']}: collected before: {', '.join(item['collected']['pngs'])}")
        for item, exc in failed:
            print(f"gimp-openai: {item.get('source') or item['label']}: error: {exc.message}"
                  + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        print(f"batch {batch_id}: {len(done)} collected now, {len(already)} before, {len(failed)} failed, of "
              f"{len(results)}", file=sys.stderr)
    return cli.EXIT_FAILED if failed else 0


def _named(item: dict[str, Any]) -> dict[str, Any]:
    """What names an item in the JSON answer: its source image, or its prompt (a generation)."""
    return {"prompt": item["prompt"]} if "prompt" in item else {"source": item["source"]}


def _check_unchanged(item: dict[str, Any]) -> None:
    """The results are placed on the image the requests were made from: a changed or missing file is refused
    (the batch's images then stay on the server; collect again once the file is back)."""
    for key in ("source", "mask"):
        path = item.get(key)
        if not path:
            continue
        try:
            same = batchapi.file_sha256(path) == item[f"{key}_sha256"]
        except OSError:
            raise E.InvalidInputError(f"{path} is gone; its batch results cannot be placed.",
                                      hint="Put the file back and run `gimp-openai batch collect` again.") from None
        if not same:
            raise E.InvalidInputError(f"{path} changed since the batch was submitted; its results would not fit.",
                                      hint="Restore the file and run `gimp-openai batch collect` again.")


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def action(global_args: list[str], rest: list[str]) -> int:
    """``batch status|collect|list|cancel``: parsed here (the ``batch`` command's own arguments are images)."""
    from . import cli

    parser = cli.Parser(prog="gimp-openai batch")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("id", nargs="?", default="")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true")
    parser.add_argument("--no-wait", action="store_true", help="collect: only if the batch has finished")
    parser.add_argument("--poll", type=cli.bounded("poll", "--poll"), default=10.0,
                        help="seconds between status checks (default 10)")
    as_json = "--json" in global_args or "--json" in rest
    try:
        args = parser.parse_args(rest)
        if args.action != "list" and not args.id:
            raise cli.UsageError(f"batch {args.action} needs the batch id (see `gimp-openai batch list`).")
        if args.action == "list":
            return _list(as_json)
        state = batchapi.BatchState.find(args.id)
        if args.action == "collect":
            return collect_state(state, as_json, quiet=args.quiet, wait=not args.no_wait,
                                 poll=max(0.2, args.poll))
        settings = __import__("gimp_openai.settings", fromlist=["load_settings"]).load_settings()
        settings.base_url = state.data["base_url"]
        _engine, api = _client_parts(settings)
        if not state.data.get("batch_id"):
            raise E.GimpOpenAIError("This submission never reached the server; nothing was paid.")
        batch = api.cancel(state.data["batch_id"]) if args.action == "cancel" else api.retrieve(state.data["batch_id"])
        state.update(status=str(batch.get("status")))
        counts = batch.get("request_counts") or {}
        if as_json:
            print(json.dumps({"ok": True, "batch_id": state.data["batch_id"], "status": batch.get("status"),
                              "request_counts": counts, "items": len(state.data["items"]),
                              "collected": sum(1 for i in state.data["items"] if i.get("collected"))}))
        else:
            print(f"batch {state.data['batch_id']}: {batch.get('status')}; {counts.get('completed', 0)} done, "
                  f"{counts.get('failed', 0)} failed of {counts.get('total', len(state.data['items']))}")
        return 0
    except E.GimpOpenAIError as exc:
        return cli.fail(exc, as_json)


def _list(as_json: bool) -> int:
    rows = [{"batch_id": s.data.get("batch_id"), "local_id": s.data["local_id"], "created": s.data["created"],
             "status": s.data.get("status"), "items": len(s.data.get("items", [])), "model": s.data.get("model"),
             "collected": sum(1 for i in s.data.get("items", []) if i.get("collected")),
             "out_dir": s.data.get("out_dir")} for s in batchapi.all_states()]
    if as_json:
        print(json.dumps({"ok": True, "batches": rows}))
        return 0
    if not rows:
        print("No batches were submitted from this computer.")
    for row in rows:
        print(f"{row['batch_id'] or row['local_id']}  {row['created']}  {row['status']}  {row['model']}  "
              f"{row['collected']}/{row['items']} collected  -> {row['out_dir']}")
    return 0
