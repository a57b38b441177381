"""The examples of docs/transforms.md run, top to bottom, in one folder with the README's
``photos/``: the normalisation and the Flax ``nnx`` embedding transforms."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def test_transforms_page_runs(tmp_path, monkeypatch, capsys):
    from datakiln.testing.image_corpus import write_image_corpus

    write_image_corpus(tmp_path / "photos", n=60, seed=3, broken=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the page's modules, written in this folder
    for name in ("normalize", "embedder"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    text = (ROOT / "docs" / "transforms.md").read_text()
    namespace: dict[str, object] = {}
    ran = 0
    for kind, body in FENCE.findall(text):
        if kind == "python":
            exec(compile(body, "docs/transforms.md", "exec"), namespace)  # the page's example
            ran += 1
    assert ran == 3
    out = capsys.readouterr().out
    assert out.count("inputs 61 = baked 60 + rejected 1") == 2
    # standardised with the data's own statistics: about zero mean per channel
    x = np.asarray(namespace["x"], dtype=np.float32)
    assert namespace["x"].dtype == np.float16
    assert np.all(np.abs(x.mean(axis=(0, 1, 2))) < 0.5)
    # the embeddings: float16, unit length, one per image
    e = namespace["e"]
    assert e.shape == (60, 64)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=2e-3)
    assert "nearest neighbour has the same label" in out
    for name in ("normalize", "embedder"):
        sys.modules.pop(name, None)
