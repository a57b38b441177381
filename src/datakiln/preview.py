"""``render_preview``: a picture of a cache that people would rather look at than read.

Images: a contact sheet of samples with their labels. Audio: mel spectrograms over waveforms.
Text: a token-length histogram and a few decoded samples. Drawn with Pillow only.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datakiln.cache.open import CachedDataset

BACKGROUND = (24, 24, 28)
INK = (235, 235, 235)
ACCENT = (255, 170, 60)
TILE = 96  # pixels per contact-sheet tile


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default()


def _sample_indices(n: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, count), replace=False))


def _title(draw: ImageDraw.ImageDraw, text: str, width: int) -> None:
    draw.rectangle([0, 0, width, 22], fill=(40, 40, 48))
    draw.text((8, 5), text, fill=INK, font=_font())


def _contact_sheet(
    dataset: CachedDataset,
    count: int,
    seed: int,
    *,
    image_key: str = "images",
    label_key: str = "labels",
    names: list[str] | None = None,
    caption_key: str | None = None,
) -> Image.Image:
    idx = _sample_indices(len(dataset), count, seed)
    batch = dataset.get_batch(indices=idx)
    images = batch[image_key]
    names = names if names is not None else dataset.class_names
    lo, hi = (-1.0, 1.0) if images.min() < 0 else (0.0, 1.0)
    pixels = np.clip((images - lo) / (hi - lo) * 255 + 0.5, 0, 255).astype(np.uint8)
    cols = int(np.ceil(np.sqrt(len(idx))))
    rows = int(np.ceil(len(idx) / cols))
    label_h = 14 + (3 * 12 if caption_key else 0)
    sheet = Image.new("RGB", (cols * (TILE + 6) + 6, rows * (TILE + label_h + 6) + 30), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _title(draw, f"{dataset.url}: {len(dataset)} images", sheet.width)
    for k, (i, tile) in enumerate(zip(idx, pixels, strict=True)):
        channels = tile.shape[-1]
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
        im = Image.fromarray(tile[..., 0] if channels == 1 else tile, mode).convert("RGB")
        im = im.resize((TILE, TILE), Image.Resampling.NEAREST)
        x, y = 6 + (k % cols) * (TILE + 6), 28 + (k // cols) * (TILE + label_h + 6)
        sheet.paste(im, (x, y))
        label = f"#{int(i)}"
        if label_key in batch:
            value = int(batch[label_key][k])
            label += f" {names[value] if names else value}"
        draw.text((x, y + TILE + 1), label[:16], fill=ACCENT, font=_font())
        if caption_key:
            for line, part in enumerate(textwrap.wrap(str(batch[caption_key][k]), 16)[:3]):
                draw.text((x, y + TILE + 13 + 12 * line), part, fill=INK, font=_font())
    return sheet


def _colormap(values: np.ndarray) -> np.ndarray:
    """A perceptually ordered dark-to-bright map for spectrograms (no matplotlib)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    stops = np.array(
        [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
    )
    pos = v * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = pos - lo
    mixed: np.ndarray = stops[lo[..., 0]] * (1 - frac) + stops[lo[..., 0] + 1] * frac
    return mixed.astype(np.uint8)


def _audio_sheet(
    dataset: CachedDataset,
    count: int,
    seed: int,
    *,
    wave_key: str = "audio",
    mel_key: str = "mel",
    caption_key: str | None = None,
) -> Image.Image:
    idx = _sample_indices(len(dataset), min(count, 8), seed)
    batch = dataset.get_batch(indices=idx)
    panel_w, mel_h, wave_h = 360, 96, 48
    sheet = Image.new(
        "RGB", (panel_w * 2 + 18, 30 + ((len(idx) + 1) // 2) * (mel_h + wave_h + 24)), BACKGROUND
    )
    draw = ImageDraw.Draw(sheet)
    _title(draw, f"{dataset.url}: {len(dataset)} clips (log-mel over waveform)", sheet.width)
    for k, i in enumerate(idx):
        x, y = 6 + (k % 2) * (panel_w + 6), 28 + (k // 2) * (mel_h + wave_h + 24)
        mel = np.asarray(batch[mel_key][k], dtype=np.float64)
        span = max(float(mel.max() - mel.min()), 1e-9)
        rgb = _colormap((mel - mel.min()) / span)[::-1]  # low frequencies at the bottom
        sheet.paste(Image.fromarray(rgb).resize((panel_w, mel_h)), (x, y))
        wave = np.asarray(batch[wave_key][k], dtype=np.float64)
        cols = np.array_split(wave, panel_w)
        peak = max(float(np.abs(wave).max()), 1e-9)
        mid = y + mel_h + 4 + wave_h // 2
        for c, part in enumerate(cols):
            if len(part):
                top = mid - int(part.max() / peak * wave_h / 2)
                bottom = mid - int(part.min() / peak * wave_h / 2)
                draw.line([x + c, top, x + c, bottom], fill=ACCENT)
        caption = f": {batch[caption_key][k]}" if caption_key else ""
        draw.text((x, y + mel_h + wave_h + 8), f"#{int(i)}{caption}"[:58], fill=INK, font=_font())
    return sheet


def _text_sheet(dataset: CachedDataset, count: int, seed: int) -> Image.Image:
    lengths = dataset.token_lengths()
    width, hist_h = 720, 180
    idx = _sample_indices(len(dataset), min(count, 8), seed)
    texts = [dataset.get_sample_text(int(i)) for i in idx]
    sheet = Image.new("RGB", (width, 60 + hist_h + 18 * len(texts) + 20), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _title(
        draw,
        f"{dataset.url}: {len(dataset)} texts, token lengths (mean "
        f"{lengths.mean():.1f}, max {lengths.max()})",
        width,
    )
    bins = min(48, max(1, int(lengths.max()) + 1))
    counts, edges = np.histogram(lengths, bins=bins)
    bar_w = (width - 40) / bins
    for b, c in enumerate(counts):
        h = int(c / max(counts.max(), 1) * hist_h)
        x0 = 20 + b * bar_w
        draw.rectangle([x0, 30 + hist_h - h, x0 + bar_w - 1, 30 + hist_h], fill=ACCENT)
    draw.text((20, 34 + hist_h), f"{int(edges[0])}", fill=INK, font=_font())
    draw.text((width - 60, 34 + hist_h), f"{int(edges[-1])}", fill=INK, font=_font())
    for k, (i, text) in enumerate(zip(idx, texts, strict=True)):
        line = f"#{int(i)}: {text}".replace("\n", " ")
        draw.text((20, 56 + hist_h + 18 * k), line[:110], fill=INK, font=_font())
    return sheet


def render_preview(
    url: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    count: int = 36,
    seed: int = 0,
) -> Image.Image:
    """A preview picture of the cache at ``url`` for its modality."""
    dataset = CachedDataset(url, storage_options=storage_options)  # open_cache, whole cache
    modality = dataset.manifest["modality"]
    if modality == "records":
        return _records_sheet(dataset, count, seed)
    if modality == "audio":
        return _audio_sheet(dataset, count, seed)
    if modality == "text":
        return _text_sheet(dataset, count, seed)
    return _contact_sheet(dataset, count, seed)


def _records_sheet(dataset: CachedDataset, count: int, seed: int) -> Image.Image:
    """Records: the first image field's contact sheet, or the first audio field's.

    Images come with their caption and label, spectrograms with their transcripts.
    """
    from datakiln.etl.fields.audio import mel_name
    from datakiln.etl.spec import FieldSpec

    fields = dataset.manifest.get("record_fields") or {}
    by_modality: dict[str, list[str]] = {}
    for name, entry in fields.items():
        by_modality.setdefault(entry["modality"], []).append(name)
    caption = f"{by_modality['text'][0]}_text" if "text" in by_modality else None
    if "image" in by_modality:
        labels = by_modality.get("label", [])
        label_key = labels[0] if labels else "labels"
        names = (dataset.manifest.get("label_classes") or {}).get(label_key)
        return _contact_sheet(
            dataset,
            count,
            seed,
            image_key=by_modality["image"][0],
            label_key=label_key,
            names=names,
            caption_key=caption,
        )
    if "audio" in by_modality:
        wave = by_modality["audio"][0]
        mel = mel_name(FieldSpec(name=wave, modality="audio"))
        return _audio_sheet(dataset, count, seed, wave_key=wave, mel_key=mel, caption_key=caption)
    kinds = ", ".join(f"{n} ({e['modality']})" for n, e in fields.items())
    raise ValueError(
        f"{dataset.url}: preview draws records with an image or audio field; this one has {kinds}"
    )
