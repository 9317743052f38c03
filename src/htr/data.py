"""Line images and their texts: JSONL manifests, the shared line normalisation, and datasets.

Manifest format (one JSON object per line): ``{"image": <path>, "text": <transcription>}``; a relative
``image`` path is relative to the manifest's folder. Training and evaluation read manifests only.

:func:`normalize_line` is applied to every line image the from-scratch recogniser sees, in training
(after rendering) and at inference (real scans), so both meet the model in the same form: dark-on-light
polarity, flattened background, stretched contrast, cropped to the ink, fixed height, and a stroke width
pulled towards a common value. :class:`LineImageProcessor` wraps it with the model's input size and is
saved next to the model.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from inkbase.errors import ConfigError, InputError
from inkbase.jsonio import iter_jsonl_objects

PROCESSOR_FILE = "preprocessor_config.json"


# --------------------------------------------------------------------------------------------- manifests
@dataclass(frozen=True)
class LineRecord:
    image: Path
    text: str


def read_manifest(path: str | os.PathLike) -> list[LineRecord]:
    """Records of a JSONL manifest; ``InputError`` names the file, line and field of a malformed row."""
    path = Path(path)
    records = []
    for i, row in iter_jsonl_objects(path):
        for key in ("image", "text"):
            if not isinstance(row.get(key), str):
                raise InputError(path, f"line {i}: {key}", "missing or not a string")
        image = Path(row["image"])
        records.append(LineRecord(image if image.is_absolute() else path.parent / image, row["text"]))
    if not records:
        raise InputError(path, "(file)", "manifest has no records")
    return records


def write_manifest(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write ``{"image", "text", ...}`` rows, storing image paths relative to the manifest's folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            row = dict(row)
            row["image"] = os.path.relpath(Path(row["image"]).resolve(), path.parent.resolve())
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def open_image(path: str | os.PathLike) -> tuple[Image.Image | None, str]:
    """(image, "") or (None, reason) for a missing, unreadable or empty image file."""
    try:
        with Image.open(path) as img:
            img.load()
            image = img.copy()
    except FileNotFoundError:
        return None, "file not found"
    except (UnidentifiedImageError, OSError, ValueError) as err:
        return None, f"unreadable image ({type(err).__name__})"
    if image.width == 0 or image.height == 0:
        return None, "empty image (0 pixels)"
    return image, ""


def usable_records(records: Sequence[LineRecord], skipped_log: str | os.PathLike | None = None,
                   ) -> tuple[list[LineRecord], list[dict]]:
    """Drop records whose image is unreadable or empty, reporting each (file named) on stderr."""
    ok, skipped = [], []
    for rec in records:
        image, reason = open_image(rec.image)
        if image is None:
            skipped.append({"image": str(rec.image), "reason": reason})
            print(f"warning: skipped {rec.image}: {reason}", file=sys.stderr)
        else:
            ok.append(rec)
    if skipped_log is not None and skipped:
        with Path(skipped_log).open("a", encoding="utf-8") as fh:
            for row in skipped:
                fh.write(json.dumps(row) + "\n")
    return ok, skipped


# --------------------------------------------------------------------------------------- normalisation
def to_grey(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 grey image; transparency is laid on white paper."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3:
            arr = cv2.cvtColor(arr[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
        return arr.astype(np.uint8)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def stroke_width(ink: np.ndarray) -> float:
    """Typical stroke width in px of a binary-ish ink map: twice the distance-to-paper on stroke centres."""
    mask = (ink > 127).astype(np.uint8)
    if mask.sum() < 10:
        return 0.0
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    ridge = (dist > 0) & (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8)))
    return float(2.0 * np.median(dist[ridge]))


def normalize_line(image: Image.Image | np.ndarray, height: int = 64, max_width: int = 1024,
                   stroke: float = 3.0, margin: int = 4) -> np.ndarray:
    """Ink map (uint8, 0 = paper, 255 = ink) of a line image, ``height`` px high, at most ``max_width``.

    Steps: grey; light-on-dark scans are inverted (the paper is the majority of pixels); the paper's
    shading is removed by a morphological opening; contrast is stretched so that firm strokes saturate;
    the crop is tightened to the ink (specks dropped); the crop is scaled to ``height - 2 * margin``;
    strokes are thinned or thickened by whole pixels towards ``stroke`` px.
    """
    grey = to_grey(image)
    if grey.size == 0:
        return np.zeros((height, height), np.uint8)
    if np.median(grey) < 128:
        grey = 255 - grey
    ink = 255.0 - grey.astype(np.float32)
    # Work at a fixed height so that kernel sizes mean the same thing for every input resolution.
    work_h = height
    scale = work_h / ink.shape[0]
    ink = cv2.resize(ink, (max(1, round(ink.shape[1] * scale)), work_h),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    k = max(3, (work_h // 4) | 1)
    background = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    ink = np.clip(ink - background, 0, 255)
    if ink.max() < 16:  # no ink at all: a blank line
        return np.zeros((height, height), np.uint8)
    u8 = ink.astype(np.uint8)
    thresh, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    thresh = max(float(thresh), 16.0)
    strong = ink[ink > thresh]
    top = float(np.percentile(strong, 75)) if strong.size else float(ink.max())
    lo = 0.5 * thresh
    ink = np.clip((ink - lo) / max(top - lo, 1.0), 0, 1)
    # Crop to the ink, ignoring specks (noise, dust) much smaller than a letter.
    mask = (ink > 0.5).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= max(4, (work_h / 40) ** 2)]
    if not keep:
        return np.zeros((height, height), np.uint8)
    x0 = min(stats[i, cv2.CC_STAT_LEFT] for i in keep)
    y0 = min(stats[i, cv2.CC_STAT_TOP] for i in keep)
    x1 = max(stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] for i in keep)
    y1 = max(stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] for i in keep)
    crop = ink[y0:y1, x0:x1]
    inner = height - 2 * margin
    s = inner / crop.shape[0]
    width = max(1, round(crop.shape[1] * s))
    crop = cv2.resize(crop, (width, inner), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    out = np.zeros((height, width + 2 * margin), np.float32)
    out[margin:margin + inner, margin:margin + width] = crop
    out = np.clip(out * 255.0, 0, 255).astype(np.uint8)
    if stroke > 0:
        out = _pull_stroke(out, stroke)
    if out.shape[1] > max_width:
        out = cv2.resize(out, (max_width, height), interpolation=cv2.INTER_AREA)
    return out


def _pull_stroke(ink: np.ndarray, target: float) -> np.ndarray:
    width = stroke_width(ink)
    if width == 0.0:
        return ink
    r = int(round((width - target) / 2))
    r = max(-2, min(2, r))
    if r == 0:
        return ink
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(r) + 1, 2 * abs(r) + 1))
    return cv2.erode(ink, kernel) if r > 0 else cv2.dilate(ink, kernel)


@dataclass
class LineImageProcessor:
    """Turns line images into the model's ``pixel_values``: (N, 1, height, width) floats, ink = 1,
    paper = -1, each line normalised (:func:`normalize_line`) and left-aligned on blank paper."""

    height: int = 64
    width: int = 1024
    stroke: float = 3.0
    margin: int = 4
    image_processor_type: str = field(default="LineImageProcessor", init=False)

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < self.height:
            raise ConfigError("model.image_size", f"({self.height}, {self.width}) must be >= 8 and wide")

    def line(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """One line as a (height, w) uint8 ink map, w <= width (its own width: CTC models take any)."""
        return normalize_line(image, self.height, self.width, self.stroke, self.margin)

    def ink(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """One line as a (height, width) uint8 ink map, padded with paper on the right."""
        line = self.line(image)
        out = np.zeros((self.height, self.width), np.uint8)
        out[:, :line.shape[1]] = line
        return out

    @staticmethod
    def to_pixel_values(ink: torch.Tensor) -> torch.Tensor:
        """uint8 ink maps (N, 1, H, W) -> model input in [-1, 1] (also used on the GPU for a batch)."""
        return ink.float().div_(127.5).sub_(1.0)

    def __call__(self, images: Sequence[Image.Image | np.ndarray] | Image.Image, return_tensors: str = "pt",
                 ) -> dict[str, torch.Tensor]:
        if isinstance(images, Image.Image | np.ndarray):
            images = [images]
        ink = torch.from_numpy(np.stack([self.ink(im) for im in images]))[:, None]
        return {"pixel_values": self.to_pixel_values(ink)}

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / PROCESSOR_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> LineImageProcessor:
        path = Path(directory) / PROCESSOR_FILE
        cfg = json.loads(path.read_text())
        if cfg.pop("image_processor_type", None) != "LineImageProcessor":
            raise InputError(path, "image_processor_type", "not a LineImageProcessor")
        return cls(**cfg)

    @staticmethod
    def is_saved_in(directory: str | os.PathLike) -> bool:
        path = Path(directory) / PROCESSOR_FILE
        if not path.is_file():
            return False
        return json.loads(path.read_text()).get("image_processor_type") == "LineImageProcessor"


# --------------------------------------------------------------------------------------------- datasets
def encode_text(tokenizer, text: str, max_length: int, decoder_start_token_id: int | None) -> list[int]:
    """Label ids for one line: the tokenizer's ids (with its end token), without a leading start token
    (the decoder is fed ``decoder_start_token_id`` first), at most ``max_length`` ids."""
    ids = tokenizer(text, add_special_tokens=True).input_ids
    if ids and decoder_start_token_id is not None and ids[0] == decoder_start_token_id:
        ids = ids[1:]
    if len(ids) > max_length:
        ids = ids[:max_length - 1] + [tokenizer.eos_token_id]
    return ids


def encode_image(image_processor, image: Image.Image) -> torch.Tensor:
    """(C, H, W) model input; the project's processor returns a uint8 ink map, converted on the device."""
    if isinstance(image_processor, LineImageProcessor):
        return torch.from_numpy(image_processor.ink(image))[None]
    return image_processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"][0]


class ManifestLineDataset(torch.utils.data.Dataset):
    """Line images of a manifest (unreadable ones dropped and reported when the dataset is built)."""

    def __init__(self, records: Sequence[LineRecord], image_processor, tokenizer, max_target_length: int,
                 decoder_start_token_id: int | None):
        self.records = list(records)
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.max_target_length = max_target_length
        self.decoder_start_token_id = decoder_start_token_id

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        rec = self.records[idx]
        image, reason = open_image(rec.image)
        if image is None:  # it was readable when the dataset was built
            raise InputError(rec.image, "image", reason)
        return {"pixel_values": encode_image(self.image_processor, image),
                "labels": encode_text(self.tokenizer, rec.text, self.max_target_length,
                                      self.decoder_start_token_id)}


class SyntheticLineDataset(torch.utils.data.Dataset):
    """Lines rendered on the fly (``htr.synth``) from training text in the given fonts.

    Item ``idx`` of epoch ``epoch`` is a pure function of ``(seed, epoch, idx)``, so a validation set
    (fixed epoch) is the same every time and each training epoch renders new lines.
    """

    def __init__(self, length: int, fonts: Sequence, texts: Mapping[str, list[str] | None],
                 weights: Mapping[str, float], max_chars: int, augment, image_processor, tokenizer,
                 max_target_length: int, decoder_start_token_id: int | None, seed: int,
                 printed_fonts: Sequence = (), printed_prob: float = 0.0):
        if not fonts:
            raise ConfigError("data.fonts", "no fonts available for this split")
        self.length = length
        self.fonts = list(fonts)
        self.names = [n for n in texts if texts[n] is None or texts[n]]
        if not self.names:
            raise ConfigError("data.text.sources", "no text found")
        p = np.array([float(weights[n]) for n in self.names])
        self.p = p / p.sum()
        self.texts = texts
        self.max_chars = max_chars
        self.augment = augment
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.max_target_length = max_target_length
        self.decoder_start_token_id = decoder_start_token_id
        self.seed = seed
        self.printed_fonts = list(printed_fonts)
        self.printed_prob = printed_prob if self.printed_fonts else 0.0
        self.epoch = 0
        self._single_threaded = False

    def __len__(self) -> int:
        return self.length

    def sample(self, idx: int) -> tuple[Image.Image, str]:
        from htr.synth.lines import render_line
        from htr.synth.text import chop, generic_sentence

        if not self._single_threaded:
            # Many rendering workers each running OpenCV's own thread pool would oversubscribe the cores.
            cv2.setNumThreads(1)
            self._single_threaded = True
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        name = self.names[int(rng.choice(len(self.names), p=self.p))]
        pool = self.texts[name]
        sentence = generic_sentence(rng) if pool is None else pool[int(rng.integers(0, len(pool)))]
        chunks = chop(sentence, self.max_chars, rng, max(1, self.max_chars // 4)) or ["."]
        text = chunks[int(rng.integers(0, len(chunks)))]
        fonts = self.fonts
        if self.printed_prob > 0 and rng.random() < self.printed_prob:
            fonts = self.printed_fonts
        for _ in range(8):
            font = fonts[int(rng.integers(0, len(fonts)))]
            label = text.upper() if font.uppercase_only else text
            if not font.missing(label):
                break
        return render_line(label, font, rng, self.augment), label

    def __getitem__(self, idx: int) -> dict[str, Any]:
        image, text = self.sample(idx)
        return {"pixel_values": encode_image(self.image_processor, image),
                "labels": encode_text(self.tokenizer, text, self.max_target_length, self.decoder_start_token_id)}


@dataclass
class LineCollator:
    """Stacks images and pads labels with -100 (ignored by the loss)."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([f["pixel_values"] for f in features])
        longest = max(len(f["labels"]) for f in features)
        labels = torch.full((len(features), longest), -100, dtype=torch.long)
        for i, f in enumerate(features):
            labels[i, :len(f["labels"])] = torch.tensor(f["labels"], dtype=torch.long)
        return {"pixel_values": pixels, "labels": labels}


def steps_per_epoch(n_examples: int, batch_size: int, accumulation: int, world_size: int) -> int:
    return max(1, math.ceil(n_examples / (batch_size * world_size)) // accumulation)
