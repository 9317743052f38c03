"""The cell reader: rendered training cells, the weights file, and the two-pass decision."""

from __future__ import annotations

import numpy as np
import pytest

from htr.cells.data import (
    CLASSES,
    CROSSED,
    EMPTY,
    INPUT_SIZE,
    cell_fonts,
    compose_cell,
    font_glyph,
    render_set,
    require_families,
    scan_glyph,
    to_input,
    warp_glyph,
)
from htr.cells.reader import DEFAULT_WEIGHTS, AcceptRule, CellReader, two_pass


def probs_for(**share: float) -> np.ndarray:
    """A probability vector over CLASSES with the given shares (``EMPTY``/``CROSSED`` as ``empty``/``crossed``)."""
    p = np.full(len(CLASSES), 1e-6)
    for name, v in share.items():
        p[CLASSES.index({"empty": EMPTY, "crossed": CROSSED}.get(name, name))] = v
    return p / p.sum()


def V(verify: float, accept: float) -> AcceptRule:  # noqa: N802 (reads like the rule it builds)
    return AcceptRule("verify", verify, accept)


def P(key: float, other: float) -> AcceptRule:  # noqa: N802
    return AcceptRule("product", key, other)


def test_agreement_is_accepted():
    read = two_pass(probs_for(B=0.99), "B", "ABCD", V(0.9, 0.9))
    assert (read.pass1, read.pass2, read.accepted, read.flag) == ("B", "B", True, "")


def test_a_wrong_answer_read_clearly_is_accepted_as_wrong():
    read = two_pass(probs_for(C=0.99), "B", "ABCD", V(0.9, 0.9))
    assert (read.pass1, read.pass2, read.accepted) == ("C", "C", True)


def test_key_letter_below_the_verify_threshold_disagrees():
    # Pass 2 says B, but pass 1 does not confirm the key B (0.6 < 0.9): the passes disagree.
    read = two_pass(probs_for(B=0.6, D=0.4), "B", "ABCD", V(0.9, 0.5))
    assert (read.pass1, read.pass2, read.flag, read.accepted) == ("D", "B", "disagree", False)


def test_key_verified_by_pass_one_needs_no_second_threshold():
    # 0.7 for the key A passes the verify threshold 0.6; the accept threshold only guards other readings.
    assert two_pass(probs_for(A=0.7, C=0.3), "A", "ABCD", V(0.6, 0.9)).accepted
    assert two_pass(probs_for(C=0.7, A=0.3), "A", "ABCD", V(0.6, 0.9)).flag == "low_confidence"


@pytest.mark.parametrize("probs, flag", [
    (probs_for(empty=0.99), "empty"),
    (probs_for(crossed=0.99), "crossed"),
    (probs_for(G=0.99), "outside_alphabet"),
    (probs_for(B=0.7, C=0.3), "low_confidence"),
])
def test_flags(probs, flag):
    read = two_pass(probs, "A", "ABCD", V(0.6, 0.9))
    assert read.flag == flag and not read.accepted


def test_second_network_must_agree():
    # Pass 1's network verifies the key B; pass 2's own network reads D: the passes disagree.
    read = two_pass(probs_for(B=0.99), "B", "ABCD", V(0.9, 0.9), probs_for(D=0.99))
    assert (read.pass1, read.pass2, read.flag) == ("B", "D", "disagree")
    # Both read C (not the key): accepted only if pass 2's own confidence reaches the accept threshold.
    assert two_pass(probs_for(C=0.99), "B", "ABCD", V(0.9, 0.9), probs_for(C=0.95, D=0.05)).accepted
    assert two_pass(probs_for(C=0.99), "B", "ABCD", V(0.9, 0.97), probs_for(C=0.95, D=0.05)).flag == "low_confidence"


def test_digit_tables_never_answer_letters():
    # O and 0 look alike: a digit table only considers digits (plus empty and crossed).
    read = two_pass(probs_for(O=0.6, **{"0": 0.4}), "0", "0123456789", V(0.5, 0.5))
    assert read.pass2 == "0" and read.accepted


def test_product_rule_accepts_the_key_on_both_networks_evidence():
    # Both read the key B: 0.8 * 0.9 = 0.72 passes the key threshold 0.6 although pass 1 alone is below 0.98.
    read = two_pass(probs_for(B=0.8, D=0.2), "B", "ABCD", P(0.6, 0.98), probs_for(B=0.9, D=0.1))
    assert (read.pass1, read.pass2, read.accepted, read.flag) == ("B", "B", True, "")
    assert read.confidence == pytest.approx(0.72, abs=1e-4)
    # The same readings with weaker evidence (0.7 * 0.8 = 0.56): both still read the key, so the flag says
    # the key is unverified rather than that the passes disagree.
    read = two_pass(probs_for(B=0.7, D=0.3), "B", "ABCD", P(0.6, 0.98), probs_for(B=0.8, D=0.2))
    assert (read.pass1, read.pass2, read.accepted, read.flag) == ("B", "B", False, "key_unverified")
    # The earlier rule calls the same cell a disagreement: pass 1 reports D once the key B is below 0.98.
    assert two_pass(probs_for(B=0.7, D=0.3), "B", "ABCD", V(0.98, 0.998), probs_for(B=0.8, D=0.2)).flag == "disagree"


def test_product_rule_needs_more_for_a_reading_that_is_not_the_key():
    # Both read C, the key is B: 0.99 * 0.995 = 0.985 >= 0.98 accepted; 0.99 * 0.98 = 0.970 is low confidence.
    assert two_pass(probs_for(C=0.99, B=0.01), "B", "ABCD", P(0.6, 0.98), probs_for(C=0.995, B=0.005)).accepted
    read = two_pass(probs_for(C=0.99, B=0.01), "B", "ABCD", P(0.6, 0.98), probs_for(C=0.98, B=0.02))
    assert (read.accepted, read.flag) == (False, "low_confidence")
    # Different top readings are a real disagreement, whatever the evidence.
    read = two_pass(probs_for(B=0.99), "B", "ABCD", P(0.6, 0.98), probs_for(D=0.99))
    assert (read.pass1, read.pass2, read.flag) == ("B", "D", "disagree")


def test_product_rule_with_a_language_model_pass_uses_the_networks_it_has():
    from htr.cells.reader import flag_cell

    rule = P(0.6, 0.98)
    p = probs_for(B=0.7, D=0.3)
    assert rule.evidence(p, None, "B") == pytest.approx(0.7, abs=1e-4)
    assert np.isnan(rule.evidence(None, None, "B"))
    assert flag_cell("B", "B", "ABCD", float("nan"), rule, "B") == ""  # two language-model reads that agree
    assert flag_cell("B", "B", "ABCD", 0.5, rule, "B") == "key_unverified"


def test_rendered_cells_have_the_requested_classes():
    fonts = cell_fonts("train")
    assert fonts, "the PyPI handwriting fonts are installed with the project"
    x, y = render_set(fonts[:2], 40, np.random.default_rng(0), empty_share=0.25, crossed_share=0.25)
    assert x.shape == (40, INPUT_SIZE, INPUT_SIZE) and x.dtype == np.uint8
    labels = {CLASSES[i] for i in y}
    assert EMPTY in labels and CROSSED in labels
    empty = x[y == CLASSES.index(EMPTY)].astype(float)
    written = x[(y != CLASSES.index(EMPTY)) & (y != CLASSES.index(CROSSED))].astype(float)
    # An empty cell shows only its border; a written one has ink in the middle.
    assert empty[:, 10:22, 10:22].mean() < written[:, 10:22, 10:22].mean()


def test_scan_glyph_keeps_shape_and_changes_resolution_and_strokes():
    glyph = np.zeros((40, 30), np.uint8)
    glyph[5:35, 13:17] = 255  # a thick vertical stroke, like a 1
    rng = np.random.default_rng(0)
    low = scan_glyph(glyph, rng, lowres_prob=1.0)
    assert low.shape == glyph.shape and low.dtype == np.uint8
    assert 0 < np.count_nonzero((low > 0) & (low < 255))  # grey edges from the round trip through <= 16 px
    assert abs(int(low[20, 14]) - 255) < 60  # the stroke survives
    sums = {int(scan_glyph(glyph, np.random.default_rng(s), thickness_prob=1.0).astype(int).sum()) for s in range(8)}
    assert min(sums) < glyph.astype(int).sum() < max(sums)  # both thinner and thicker strokes are drawn
    assert np.array_equal(scan_glyph(glyph, rng), glyph)  # both chances 0: unchanged


def test_warp_glyph_gives_another_shape_of_the_same_ink():
    glyph = np.zeros((28, 20), np.uint8)
    glyph[3:25, 8:12] = 255
    glyph[3:7, 4:16] = 255  # a T
    shapes = [warp_glyph(glyph, np.random.default_rng(s)) for s in range(6)]
    assert all(g.dtype == np.uint8 and g.max() > 200 for g in shapes)
    # Cropped to the ink at a 64 px scale (with some spread from the random width and rotation).
    assert all(40 <= max(g.shape) <= 100 for g in shapes)
    assert len({g.shape for g in shapes}) > 1
    assert np.array_equal(warp_glyph(glyph, np.random.default_rng(1)), shapes[1])  # seeded


def test_render_set_without_warp_draws_the_same_cells():
    fonts = cell_fonts("train")[:2]
    a = render_set(fonts, 12, np.random.default_rng(4))
    b = render_set(fonts, 12, np.random.default_rng(4), warp_prob=0.0)
    c = render_set(fonts, 12, np.random.default_rng(4), warp_prob=1.0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_a_missing_test_family_is_named():
    from inkbase.errors import ConfigError

    fonts = [f for f in cell_fonts("test") if f.family != "Indie Flower"]
    with pytest.raises(ConfigError, match="indie flower.*prepare.py"):
        require_families("test", fonts)


def test_split_is_by_family_and_disjoint():
    names = {s: {f.family.lower() for f in cell_fonts(s)} for s in ("train", "val", "test")}
    assert not names["train"] & names["test"] and not names["train"] & names["val"]
    assert {"indie flower", "shadows into light"} <= names["test"]


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="shipped weights missing")
def test_shipped_reader_reads_clear_letters():
    reader = CellReader()
    # Every shipped weights file together stays under the project's 25 MB.
    assert sum(f.stat().st_size for f in DEFAULT_WEIGHTS.parent.parent.rglob("*.safetensors")) < 25_000_000
    assert 0 < reader.verify_threshold <= 1 and 0.5 <= reader.accept_threshold <= 1
    assert reader.rule == AcceptRule("product", 0.2, 0.98)  # chosen on the validation cells (model card)
    assert (reader.model.width, reader.model2.width) == (48, 48)
    font = next(f for f in cell_fonts("test") if f.family == "Indie Flower")  # a held-out hand
    rng = np.random.default_rng(3)
    letters = "ABCDEFGHKMRTXZ"
    crops = [compose_cell(font_glyph(c, font, rng), rng, stray_prob=0) for c in letters]
    crops.append(compose_cell(None, rng, stray_prob=0))
    probs = reader.probs(crops)
    read = [CLASSES[i] for i in probs.argmax(1)]
    assert sum(r == c for r, c in zip(read[:-1], letters, strict=True)) >= len(letters) - 1
    assert read[-1] == EMPTY
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert to_input(crops[0]).shape == (INPUT_SIZE, INPUT_SIZE)


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="shipped weights missing")
def test_shipped_reader_reads_digits_with_its_digit_specialist():
    reader = CellReader()
    assert reader.model_digits is not None and reader.model_digits.width == 24
    assert reader.model_digits1 is not None and reader.pass1_mix == "mean"
    # The digit tables' mean keeps the general pass 1 it was calibrated with (the file's pass 1 is newer).
    assert reader.model_digits_mix is not None and reader.model_digits_mix.width == 16
    # Digit tables: thresholds chosen on the digit validation cells (model card); letters keep theirs.
    assert reader.rule_for("0123456789") == AcceptRule("product", 0.5, 0.97)
    assert (reader.shift, reader.digit_shift) == (1, 1)  # every table reads each cell at five positions
    assert reader.rule_for("ABCDEFGH") is reader.rule
    font = next(f for f in cell_fonts("test") if f.family == "Indie Flower")  # a held-out hand
    rng = np.random.default_rng(5)
    digits = "0123456789"
    crops = [compose_cell(font_glyph(c, font, rng), rng, stray_prob=0) for c in digits]
    p1, p2 = reader.pass_probs(crops, digits)
    general = reader.pass_probs(crops)[1]
    assert not np.allclose(p2, general)  # pass 2 is another network for digit tables
    read = [CLASSES[i] for i in p2.argmax(1)]
    assert sum(r == c for r, c in zip(read, digits, strict=True)) >= len(digits) - 1
    reads = [reader.read(a, c, digits, b) for a, b, c in zip(p1, p2, digits, strict=True)]
    assert sum(r.accepted for r in reads) >= len(digits) - 2
