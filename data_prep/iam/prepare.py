"""IAM handwritten lines from the Hugging Face hub (or a copy saved with ``save_to_disk``) -> manifests.

python data_prep/iam/prepare.py --out data/iam_lines [--source Teklia/IAM-line]

Writes ``<out>/<split>/<n>.png`` and ``<out>/<split>.jsonl`` ({"image", "text"}) for every split of the
source (Teklia/IAM-line: train, validation, test). IAM's terms allow non-commercial research use only;
the images are not redistributed with the project.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from htr.data import write_manifest
from inkbase.errors import InputError


def load_source(source: str):
    """A ``DatasetDict``: a folder saved with ``save_to_disk``, else a hub dataset name."""
    import datasets

    if Path(source).is_dir():
        return datasets.load_from_disk(source)
    return datasets.load_dataset(source)


def prepare(source: str, out_dir: str | Path, image_column: str = "image", text_column: str = "text",
            ) -> dict[str, int]:
    """Write one manifest per split; returns the number of lines per split."""
    dataset = load_source(source)
    out_dir = Path(out_dir)
    counts = {}
    for split, rows in dataset.items():
        for column in (image_column, text_column):
            if column not in rows.column_names:
                raise InputError(source, f"{split}: {column}", f"no such column (have {', '.join(rows.column_names)})")
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        manifest = []
        for i, row in enumerate(tqdm(rows, desc=split, unit="line")):
            path = folder / f"{i:06d}.png"
            row[image_column].convert("L").save(path)
            manifest.append({"image": path, "text": " ".join(str(row[text_column]).split())})
        counts[split] = write_manifest(out_dir / f"{split}.jsonl", manifest)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="Teklia/IAM-line", help="hub dataset name or save_to_disk folder")
    parser.add_argument("--out", required=True, help="output folder (keep it out of git, e.g. under data/)")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--text-column", default="text")
    args = parser.parse_args(argv)
    try:
        counts = prepare(args.source, args.out, args.image_column, args.text_column)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split, n in counts.items():
        print(f"{split}: {n} lines -> {Path(args.out) / (split + '.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
