from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image
from tests.conftest import write_small_images

from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams
from datakiln.preview import render_preview


def test_image_contact_sheet_has_every_tile_and_is_not_blank(tmp_path):
    write_small_images(tmp_path / "raw", [f"{c}/{k}.png" for c in ("ant", "bee") for k in range(6)])
    out = str(tmp_path / "c")
    bake(
        BakeSpec(
            sources=(str(tmp_path / "raw"),),
            output=out,
            image=ImageParams(height=16, width=16, labels="parent"),
        )
    )
    picture = render_preview(out, count=9)
    assert picture.width >= 3 * 96
    assert picture.height >= 3 * 96
    pixels = np.asarray(picture.convert("L"), dtype=np.float64)
    assert pixels.std() > 20  # real content, not a flat background
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "datakiln",
            "preview",
            out,
            "-o",
            str(tmp_path / "p.png"),
            "--count",
            "9",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote" in result.stdout
    assert (
        Image.open(tmp_path / "p.png").size == picture.size
        or Image.open(tmp_path / "p.png").width > 0
    )
