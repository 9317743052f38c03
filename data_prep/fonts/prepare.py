"""Fetch the handwriting fonts of the catalogue in ``htr.synth.fonts`` into the font cache.

python data_prep/fonts/prepare.py [--cache <dir>] [--only npm|debian]

Debian packages are downloaded with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (no root, no
system change); npm ``@fontsource/*`` packages are fetched with ``npm pack`` and only their Latin regular
``.woff`` is kept. The cache defaults to ``$INKGRADE_FONT_DIR`` or ``~/.cache/inkgrade/fonts``; set the
same variable when training so :func:`htr.synth.fonts.list_fonts` finds them. A package already fetched
is skipped, so an interrupted run resumes; a package that cannot be fetched is reported and skipped.
The default test suite needs none of these fonts (the PyPI ``fontpkg-*`` fonts are dependencies).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tqdm import tqdm

from htr.synth.fonts import DEBIAN_PACKAGES, NPM_PACKAGES, font_cache, list_fonts, npm_font_file


def fetch_debian(package: str, cache: Path) -> str | None:
    """Unpack ``package`` into ``<cache>/debian``; the problem as text, or None when it worked."""
    stamp = cache / "debian" / ".fetched" / package
    if stamp.is_file():
        return None
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return "apt-get/dpkg-deb not found (not a Debian system)"
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if res.returncode or not debs:
            return (res.stderr.strip().splitlines() or ["apt-get download failed"])[-1]
        (cache / "debian").mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(cache / "debian")], capture_output=True, text=True)
        if res.returncode:
            return (res.stderr.strip().splitlines() or ["dpkg-deb -x failed"])[-1]
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    return None


def fetch_npm(package: str, cache: Path) -> str | None:
    """Keep the Latin regular .woff of ``package`` in ``<cache>/npm/<slug>/``."""
    slug = package.split("/", 1)[1]
    target = npm_font_file(slug, cache)
    if target.is_file():
        return None
    if shutil.which("npm") is None:
        return "npm not found"
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(["npm", "pack", package, "--silent"], cwd=tmp, capture_output=True, text=True)
        tgz = list(Path(tmp).glob("*.tgz"))
        if res.returncode or not tgz:
            return (res.stderr.strip().splitlines() or ["npm pack failed"])[-1]
        member = f"package/files/{target.name}"
        with tarfile.open(tgz[0]) as tar:
            try:
                data = tar.extractfile(member)
            except KeyError:
                return f"{member} is not in the package"
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_suffix(".part")
            part.write_bytes(data.read())
            part.rename(target)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="font cache (default: $INKGRADE_FONT_DIR)")
    parser.add_argument("--only", choices=("npm", "debian"), default=None)
    args = parser.parse_args(argv)
    cache = args.cache or font_cache()
    jobs = [(fetch_debian, p) for p in DEBIAN_PACKAGES if args.only in (None, "debian")]
    jobs += [(fetch_npm, p) for p in NPM_PACKAGES if args.only in (None, "npm")]
    failed = 0
    for fetch, package in tqdm(jobs, desc="fonts", unit="package"):
        problem = fetch(package, cache)
        if problem:
            failed += 1
            print(f"warning: {package}: {problem}", file=sys.stderr)
    if args.cache is None:
        print(f"{len(list_fonts('train'))} training, {len(list_fonts('heldout'))} held-out and "
              f"{len(list_fonts('heldout_extra'))} extra held-out fonts available")
    print(f"{len(jobs) - failed}/{len(jobs)} packages in {cache}")
    return 1 if failed == len(jobs) and jobs else 0


if __name__ == "__main__":
    sys.exit(main())
