"""Handwriting fonts available on this machine, with a fixed train / held-out split.

Three sources are searched:

* PyPI packages ``fontpkg-*`` (declared in pyproject.toml, so always present, CI included);
* Debian font packages, when installed (``apt-get install fonts-dkg-handwriting fonts-breip
  fonts-bwht fonts-humor-sans fonts-kristi fonts-ecolier-court fonts-dancingscript
  fonts-kaushanscript fonts-comic-neue fonts-sjfonts fonts-rufscript``), or unpacked into the font
  cache by ``python data_prep/fonts/prepare.py`` (no root needed);
* npm ``@fontsource/*`` packages (their Latin ``.woff``, which Pillow and fontTools read directly),
  fetched into the font cache by the same step. The cache is ``$INKGRADE_FONT_DIR``, by default
  ``~/.cache/inkgrade/fonts``; nothing in the default test suite needs it.

The catalogue below is explicit rather than "every font in a folder" so that the split cannot drift
when someone installs an unrelated font. Left out on purpose: Cabin Sketch and Femke Klaver draw
outlined (double) strokes, which no pen makes; ``breipfont.ttf`` duplicates ``Breip.ttf``;
Debian's regular Dancing Script duplicates the PyPI variable font.

Held-out split
--------------
``HELDOUT_FAMILIES`` are never used to train handwriting recognition; they render the answers of the
end-to-end benchmark and the demo, so a recogniser is measured on writing styles it has not seen. Two of
the three come from PyPI so the benchmark still has held-out fonts where no other font is installed:

* Indie Flower (PyPI): round, upright print;
* Shadows Into Light (PyPI): narrow, slanted quick print;
* Breip (Debian ``fonts-breip``): thin, loose print.

``EXTRA_HELDOUT_FAMILIES`` (split ``"heldout_extra"``) are npm fonts fixed when those were added, before
any of them was rendered: Patrick Hand (neat print), Reenie Beanie (fast scrawl), Homemade Apple
(connected cursive), Nanum Pen Script (narrow marker print) and Cedarville Cursive (thin school
cursive). They are never trained on either and measure recognisers on more varied unseen hands, while
the benchmark's three stay as they were. None shares a family with a training font. ``"train"`` is
every other available font, ``"all"`` the union.

Some fonts draw lower-case letters as capitals (``uppercase_only=True``): text rendered with them
matches only an upper-cased label, so callers upper-case the label or skip those fonts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from inkbase.errors import ConfigError

HELDOUT_FAMILIES = ("Indie Flower", "Shadows Into Light", "Breip")
EXTRA_HELDOUT_FAMILIES = ("Patrick Hand", "Reenie Beanie", "Homemade Apple", "Nanum Pen Script", "Cedarville Cursive")
SPLITS = ("train", "heldout", "heldout_extra", "all")
DEBIAN_FONT_ROOTS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
FONT_CACHE_ENV = "INKGRADE_FONT_DIR"


def font_cache() -> Path:
    """Where ``data_prep/fonts/prepare.py`` puts the fonts it fetches (``$INKGRADE_FONT_DIR``)."""
    return Path(os.environ.get(FONT_CACHE_ENV) or Path.home() / ".cache" / "inkgrade" / "fonts")


@dataclass(frozen=True)
class Font:
    """One font file. ``name`` is a stable slug used in manifests (e.g. ``kalam-bold``)."""

    name: str
    path: str
    uppercase_only: bool = False
    family: str = ""
    source: str = ""  # "pypi" or "debian"
    heldout: bool = field(default=False, compare=False)

    def missing(self, text: str) -> set[str]:
        """Characters of ``text`` (other than whitespace) that the font has no glyph for."""
        cmap = _codepoints(self.path)
        return {ch for ch in set(text) if not ch.isspace() and ord(ch) not in cmap}


# (name, family, pypi module or None, file name, uppercase_only)
_PYPI = (
    ("caveat", "Caveat", "fontpkg_caveat", "Caveat[wght].ttf", False),
    ("dancing-script", "Dancing Script", "fontpkg_dancing_script", "DancingScript[wght].ttf", False),
    ("delius", "Delius", "fontpkg_delius", "Delius-Regular.ttf", False),
    ("indie-flower", "Indie Flower", "fontpkg_indie_flower", "IndieFlower-Regular.ttf", False),
    ("kalam-bold", "Kalam", "fontpkg_kalam", "Kalam-Bold.ttf", False),
    ("kalam-light", "Kalam", "fontpkg_kalam", "Kalam-Light.ttf", False),
    ("kalam-regular", "Kalam", "fontpkg_kalam", "Kalam-Regular.ttf", False),
    ("permanent-marker", "Permanent Marker", "fontpkg_permanent_marker", "PermanentMarker-Regular.ttf", True),
    ("shadows-into-light", "Shadows Into Light", "fontpkg_shadows_into_light", "ShadowsIntoLight.ttf", False),
    ("zeyada", "Zeyada", "fontpkg_zeyada", "Zeyada.ttf", False),
)
# (name, family, path relative to a Debian font root, uppercase_only)
_DEBIAN = (
    ("because-we-build", "Because We Build", "opentype/bwht/BecauseWeBuild-Regular.otf", True),
    ("because-we-connect", "Because We Connect", "opentype/bwht/BecauseWeConnect-Regular.otf", True),
    ("because-we-create", "Because We Create", "opentype/bwht/BecauseWeCreate-Regular.otf", True),
    ("because-we-learn", "Because We Learn", "opentype/bwht/BecauseWeLearn-Regular.otf", True),
    ("because-we-mentor", "Because We Mentor", "opentype/bwht/BecauseWeMentor-Regular.otf", True),
    ("because-we-organize", "Because We Organize", "opentype/bwht/BecauseWeOrganize-Regular.otf", True),
    ("breip", "Breip", "truetype/breip/Breip.ttf", False),
    ("comic-neue-bold", "Comic Neue", "opentype/comic-neue/ComicNeue-Bold.otf", False),
    ("comic-neue-bold-italic", "Comic Neue", "opentype/comic-neue/ComicNeue-BoldItalic.otf", False),
    ("comic-neue-italic", "Comic Neue", "opentype/comic-neue/ComicNeue-Italic.otf", False),
    ("comic-neue-light", "Comic Neue", "opentype/comic-neue/ComicNeue-Light.otf", False),
    ("comic-neue-light-italic", "Comic Neue", "opentype/comic-neue/ComicNeue-LightItalic.otf", False),
    ("comic-neue-regular", "Comic Neue", "opentype/comic-neue/ComicNeue-Regular.otf", False),
    ("dancing-script-bold", "Dancing Script", "opentype/dancingscript/DancingScript-Bold.otf", False),
    ("dkg-handwriting", "DkgHandwriting", "truetype/fifthhorseman/dkg.ttf", False),
    ("dkg-handwriting-bold", "DkgHandwriting", "truetype/fifthhorseman/dkgBd.ttf", False),
    ("dkg-handwriting-bold-oblique", "DkgHandwriting", "truetype/fifthhorseman/dkgBI.ttf", False),
    ("dkg-handwriting-oblique", "DkgHandwriting", "truetype/fifthhorseman/dkgIt.ttf", False),
    ("ecolier-court", "Ecolier Court", "truetype/ecolier-court/Ecolier-court.ttf", False),
    ("humor-sans", "Humor Sans", "truetype/humor-sans/Humor-Sans.ttf", True),
    ("kaushan-script", "Kaushan Script", "opentype/kaushanscript/KaushanScript-Regular.otf", False),
    ("kristi", "Kristi", "truetype/kristi/Kristi.ttf", False),
    ("rufscript", "Rufscript", "truetype/rufscript/Rufscript010.ttf", False),
    ("sj-delphine", "Delphine", "truetype/sjfonts/Delphine.ttf", False),
    ("sj-steve-hand", "Steve", "truetype/sjfonts/SteveHand.ttf", False),
)
DEBIAN_PACKAGES = ("fonts-dkg-handwriting", "fonts-breip", "fonts-bwht", "fonts-humor-sans", "fonts-kristi",
                   "fonts-ecolier-court", "fonts-dancingscript", "fonts-kaushanscript", "fonts-comic-neue",
                   "fonts-sjfonts", "fonts-rufscript")
# npm @fontsource slugs (family = the slug's words capitalised, except where given) and uppercase_only.
# Left out: families already above (PyPI/Debian), Cabin Sketch (outlined strokes), Amatic SC and Sniglet
# (display capitals), the CJK brush fonts (no Latin subset), and the ornate formal scripts (Alex Brush,
# Allura, Great Vibes, Pinyon Script, ...), which no one writes an exam answer in.
_NPM = (
    ("annie-use-your-telescope", None, False), ("architects-daughter", None, False), ("bad-script", None, False),
    ("caveat-brush", None, False), ("cedarville-cursive", None, False), ("chilanka", None, False),
    ("cookie", None, False), ("covered-by-your-grace", None, False), ("damion", None, False),
    ("dawning-of-a-new-day", "Dawning of a New Day", False), ("gaegu", None, False),
    ("gloria-hallelujah", None, False), ("gochi-hand", None, False), ("handlee", None, False),
    ("homemade-apple", None, False), ("itim", None, False), ("just-another-hand", None, False),
    ("mansalva", None, False), ("marck-script", None, False), ("ms-madi", None, False),
    ("nanum-brush-script", None, False), ("nanum-pen-script", None, False), ("neucha", None, False),
    ("oooh-baby", None, False), ("pacifico", None, False), ("patrick-hand", None, False),
    ("playpen-sans", None, False), ("poor-story", None, False), ("reenie-beanie", None, False),
    ("rock-salt", None, False), ("satisfy", None, False), ("schoolbell", None, False),
    ("shantell-sans", None, False), ("short-stack", None, False), ("sriracha", None, False),
    ("sue-ellen-francisco", None, False), ("swanky-and-moo-moo", "Swanky and Moo Moo", False),
    ("the-girl-next-door", None, False), ("twinkle-star", None, False), ("yellowtail", None, False),
    ("yomogi", None, False), ("yusei-magic", None, False), ("zen-kurenaido", None, False),
)
NPM_PACKAGES = tuple(f"@fontsource/{slug}" for slug, _, _ in _NPM)


def npm_font_file(slug: str, root: Path | None = None) -> Path:
    """Where the fetched Latin regular face of ``@fontsource/<slug>`` lives in the font cache."""
    return (root or font_cache()) / "npm" / slug / f"{slug}-latin-400-normal.woff"


def _pypi_file(module: str, file_name: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "files" / file_name
    return path if path.is_file() else None


def _debian_file(rel: str) -> Path | None:
    for root in (*DEBIAN_FONT_ROOTS, font_cache() / "debian" / "usr" / "share" / "fonts"):
        if (root / rel).is_file():
            return root / rel
    return None


@lru_cache(maxsize=1)
def _available() -> tuple[Font, ...]:
    fonts = []
    for name, family, module, file_name, upper in _PYPI:
        path = _pypi_file(module, file_name)
        if path is not None:
            fonts.append(Font(name, str(path), upper, family, "pypi", family in HELDOUT_FAMILIES))
    for name, family, rel, upper in _DEBIAN:
        path = _debian_file(rel)
        if path is not None:
            fonts.append(Font(name, str(path), upper, family, "debian", family in HELDOUT_FAMILIES))
    for slug, family, upper in _NPM:
        path = npm_font_file(slug)
        family = family or slug.replace("-", " ").title()
        if path.is_file():
            fonts.append(Font(slug, str(path), upper, family, "npm", family in HELDOUT_FAMILIES + EXTRA_HELDOUT_FAMILIES))
    return tuple(fonts)


def list_fonts(split: str = "train") -> list[Font]:
    """Fonts of one split ("train", "heldout", "heldout_extra" or "all") found on this machine, in catalogue
    order."""
    if split not in SPLITS:
        raise ConfigError("fonts.split", f"{split!r} is not one of {', '.join(SPLITS)}")
    fonts = _available()
    if split == "train":
        return [f for f in fonts if not f.heldout]
    if split == "heldout":
        return [f for f in fonts if f.family in HELDOUT_FAMILIES]
    if split == "heldout_extra":
        return [f for f in fonts if f.family in EXTRA_HELDOUT_FAMILIES]
    return list(fonts)


_PRINTED = ("DejaVuSans.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf",
            "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf")


@lru_cache(maxsize=1)
def printed_fonts() -> tuple[Font, ...]:
    """Printed (typeset) fonts from matplotlib's data folder, a dependency and so present everywhere: lines
    rendered in them keep a fine-tuned recogniser reading the print its pretrained start was taught on."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return tuple(Font(f"printed-{f.removesuffix('.ttf').lower()}", str(root / f), False, "DejaVu", "matplotlib")
                 for f in _PRINTED if (root / f).is_file())


def get_font(name: str) -> Font:
    """The available font called ``name``; ``ConfigError`` listing the choices otherwise."""
    for font in _available():
        if font.name == name:
            return font
    raise ConfigError("font", f"{name!r} is not available; available: {', '.join(f.name for f in _available())}")


@lru_cache(maxsize=64)
def _codepoints(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    # Some Debian fonts carry a harmless stray byte in their glyph-name table; fontTools warns on each load.
    logging.getLogger("fontTools.ttLib.tables._p_o_s_t").setLevel(logging.ERROR)

    with TTFont(path, lazy=True) as tt:
        return frozenset(tt.getBestCmap() or {})
