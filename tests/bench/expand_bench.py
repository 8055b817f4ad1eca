"""Expand Canvas figures: 25 % more canvas on one side of a textured picture through the local server.

* old pixels changed: pixels of the old canvas that differ in the expanded picture (must be 0);
* edge step: per row, the mean colour of the 4 px columns on either side of the old edge, compared in CIE
  ΔE2000, averaged over the rows (must be <= 3; the same figure between two neighbouring 4 px columns inside
  the old picture is printed beside it as what the texture itself gives).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def edge_step(pixels: np.ndarray, x: int, width: int = 4) -> float:
    from gimp_openai.seamless.tone import delta_e_2000, rgb_to_lab

    left = pixels[:, x - width : x, :3].astype(np.float32).mean(axis=1)
    right = pixels[:, x : x + width, :3].astype(np.float32).mean(axis=1)
    lab = rgb_to_lab(np.clip(np.rint(np.stack([left, right])), 0, 255).astype(np.uint8))
    return float(delta_e_2000(lab[0], lab[1]).mean())


def run(image: Path | None = None) -> dict:
    from gimp_openai import expand, operations
    from gimp_openai.history import History
    from gimp_openai.settings import Settings

    from tests.engine._client_helpers import client_for
    from tests.support.local_server import LocalServerHandle

    source = image or ROOT / "plugin" / "gimp_openai" / "data" / "lake-balloon.png"
    photo = np.asarray(Image.open(source).convert("RGBA"))
    height, width = photo.shape[:2]
    margin = width // 4
    server = LocalServerHandle()
    try:
        with tempfile.TemporaryDirectory(prefix="gimp-openai-bench-") as tmp:
            engine = operations.Engine(Settings(), client_for(server.url), History(Path(tmp) / "history"))
            figures = {}
            for label, limit in (("one edit", None), ("tiled (512 px tiles)", 512)):
                out = expand.expand(engine, operations.Options(model="gpt-image-2"), photo,
                                    expand.Margins(right=margin), limit=limit)
                full = out.composite(photo)
                figures[label] = {
                    "tiles": len(out.tiles),
                    "old_pixels_changed": int((full[:, :width] != photo).any(axis=2).sum()),
                    "edge_step_de2000": round(edge_step(full, width), 3),
                }
            figures["texture_step_inside_de2000"] = round(edge_step(photo, width - 4), 3)
    finally:
        server.stop()
    figures["image"] = f"{source.name} {width}x{height}, +{margin} px on the right"
    return figures


def main() -> int:
    figures = run()
    print(f"expand: {figures['image']}")
    for label in ("one edit", "tiled (512 px tiles)"):
        f = figures[label]
        print(f"  {label}: {f['tiles']} request(s), old pixels changed {f['old_pixels_changed']}, "
              f"edge step ΔE2000 {f['edge_step_de2000']} (limit 3)")
    print(f"  the texture's own step between neighbouring 4 px columns: ΔE2000 {figures['texture_step_inside_de2000']}")
    ok = all(figures[k]["old_pixels_changed"] == 0 and figures[k]["edge_step_de2000"] <= 3
             for k in ("one edit", "tiled (512 px tiles)"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
