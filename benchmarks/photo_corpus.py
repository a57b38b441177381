"""An ImageNet-like corpus: photographic-looking JPEGs of 300-1000 px, one folder per class.

    python benchmarks/photo_corpus.py --out /tmp/photos --n 1200 --classes 10

Each image is a smooth random field (a few random values per side, upsampled bicubically),
a finer one for texture, a lighting gradient, a handful of soft-edged shapes whose kind and
palette depend on the class, and sensor-like noise, saved as JPEG at quality 85-95 with 4:2:0
chroma, as cameras and ImageNet's crawl give. Sizes and aspect ratios vary per image. It is
not natural imagery, but it has what matters to decoders and codecs: smooth areas, texture,
edges, noise, and real JPEG files of realistic size. Deterministic for a seed; about 50 ms
an image on one core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _photo(rng: np.random.Generator, width: int, height: int, label: int) -> Image.Image:
    hue = np.array([label * 37 % 256, label * 91 % 256, label * 53 % 256], np.float32)
    coarse = rng.uniform(0, 255, (rng.integers(3, 7), rng.integers(3, 7), 3)).astype(np.uint8)
    field = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(field, np.float32) * 0.6 + hue * 0.4
    # texture: a finer random field at a lower amplitude (foliage, fabric, fur, ...)
    cells = (int(height // rng.integers(6, 20)), int(width // rng.integers(6, 20)))
    fine = rng.normal(0, rng.uniform(10, 30), (*cells, 1)).astype(np.float32)
    texture = Image.fromarray(fine[..., 0]).resize((width, height), Image.Resampling.BILINEAR)
    pixels = pixels + np.asarray(texture, np.float32)[..., None]
    ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    slope = rng.uniform(-40, 40, 2).astype(np.float32)
    pixels = pixels + ys * slope[0] + xs * slope[1]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.3) * min(width, height)
        color = tuple(int(c) for c in np.clip(hue + rng.normal(0, 60, 3), 0, 255))
        box = (x0 - r, y0 - r * rng.uniform(0.5, 1.5), x0 + r, y0 + r)
        if label % 3 == 0:
            draw.ellipse(box, fill=color)
        elif label % 3 == 1:
            draw.rectangle(box, fill=color)
        else:
            draw.polygon([(box[0], box[3]), (x0, box[1]), (box[2], box[3])], fill=color)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.6)))
    noisy = np.asarray(image, np.float32)
    noisy += rng.standard_normal(noisy.shape, dtype=np.float32) * np.float32(rng.uniform(2, 5))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_photo_corpus(root: Path, n: int, *, classes: int = 10, seed: int = 0) -> list[Path]:
    """Write ``n`` JPEGs under ``root/class_XX/``; existing files are kept (the corpus is
    deterministic), so a second call costs nothing."""
    paths = []
    for k in range(n):
        label = k % classes
        path = root / f"class_{label:02d}" / f"{k:06d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng([seed, k])
        width, height = (int(v) for v in rng.integers(300, 1001, 2))
        path.parent.mkdir(parents=True, exist_ok=True)
        photo = _photo(rng, width, height, label)
        photo.save(path, quality=int(rng.integers(85, 96)), subsampling="4:2:0")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/photos")
    parser.add_argument("--n", type=int, default=1200)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = write_photo_corpus(Path(args.out), args.n, classes=args.classes, seed=args.seed)
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} JPEGs, {total / len(paths) / 1024:.0f} KiB each on average")


if __name__ == "__main__":
    main()
