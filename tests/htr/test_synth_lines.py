"""Fonts, training text and the line renderer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from htr.synth.fonts import HELDOUT_FAMILIES, get_font, list_fonts
from htr.synth.lines import AugmentConfig, ink_bbox, render_ink, render_line, sample_style
from htr.synth.text import CHARSET, chop, line_texts, semeval_train_sentences, to_charset
from inkbase.errors import ConfigError, InputError


def test_font_splits_are_disjoint_and_heldout_works_with_pypi_fonts_alone():
    train, heldout, every = list_fonts("train"), list_fonts("heldout"), list_fonts("all")
    assert {f.family for f in train}.isdisjoint({f.family for f in heldout})
    extra = list_fonts("heldout_extra")  # fetched npm fonts only (data_prep/fonts): often empty
    assert sorted(f.name for f in train + heldout + extra) == sorted(f.name for f in every)
    assert len([f for f in heldout if f.source == "pypi"]) >= 2
    assert {f.family for f in heldout} <= set(HELDOUT_FAMILIES)
    assert len([f for f in train if f.source == "pypi" and not f.uppercase_only]) >= 5
    assert get_font("permanent-marker").uppercase_only and not get_font("caveat").uppercase_only
    assert len({f.name for f in every}) == len(every)
    with pytest.raises(ConfigError, match="fonts.split"):
        list_fonts("test")


def test_every_font_covers_letters_and_digits():
    alnum = "".join(ch for ch in CHARSET if ch.isalnum())
    for font in list_fonts("all"):
        assert not font.missing(alnum), font.name


def test_clean_render_is_dark_ink_on_white_with_small_margins():
    font = get_font("caveat")
    img = render_line("Photosynthesis makes glucose", font, np.random.default_rng(0))
    arr = np.asarray(img)
    assert img.mode == "L"
    assert arr.min() < 60 and np.median(arr) > 240
    x0, y0, x1, y1 = ink_bbox(255 - arr, threshold=60)
    assert abs(x0 - 8) <= 2 and abs(y0 - 8) <= 2
    assert abs((arr.shape[1] - x1) - 8) <= 2 and abs((arr.shape[0] - y1) - 8) <= 2
    # A longer text makes a wider line at the same height scale.
    longer = render_line("Photosynthesis makes glucose from light", font, np.random.default_rng(0))
    assert longer.width > img.width + 100 and abs(longer.height - img.height) < 20


def test_augmented_render_is_reproducible_and_varies_with_seed():
    font = get_font("kalam-regular")
    aug = AugmentConfig()
    a = np.asarray(render_line("The mass cancels out.", font, np.random.default_rng(7), aug))
    b = np.asarray(render_line("The mass cancels out.", font, np.random.default_rng(7), aug))
    c = np.asarray(render_line("The mass cancels out.", font, np.random.default_rng(8), aug))
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_each_augmentation_keeps_the_text_visible():
    font = get_font("caveat")
    on = {f.name: 1.0 for f in dataclasses.fields(AugmentConfig) if f.name.endswith("_prob")}
    on["invert_prob"] = 0.0  # a negative has light ink (test_letter_spacing_and_polarity_augmentations)
    aug = dataclasses.replace(AugmentConfig(), **on)
    rng = np.random.default_rng(3)
    for _ in range(10):
        arr = np.asarray(render_line("Voltage = 3.5 V (approx.)", font, rng, aug)).astype(float)
        assert arr.shape[0] >= 20 and arr.shape[1] > 3 * arr.shape[0]
        # Ink is clearly darker than the paper around it.
        assert np.percentile(arr, 95) - np.percentile(arr, 2) > 60


def test_slant_shears_the_ink():
    font = get_font("delius")
    rng = np.random.default_rng(0)
    upright = sample_style(font, rng, AugmentConfig.clean())
    leaning = dataclasses.replace(upright, slant=0.4)
    a, b = render_ink("IIIIIIII", upright, rng), render_ink("IIIIIIII", leaning, rng)
    wa, wb = ink_bbox(a.mask), ink_bbox(b.mask)
    height = wa[3] - wa[1]
    assert (wb[2] - wb[0]) - (wa[2] - wa[0]) == pytest.approx(0.4 * height, abs=6)


def test_augment_config_is_range_checked():
    with pytest.raises(ConfigError, match="augment.blur_prob"):
        AugmentConfig(blur_prob=1.5)
    with pytest.raises(ConfigError, match="augment.font_size"):
        AugmentConfig(font_size=(60.0, 20.0))
    with pytest.raises(ConfigError, match="augment.bogus"):
        AugmentConfig.from_dict({"bogus": 1})
    assert AugmentConfig.from_dict({"font_size": [20, 30]}).font_size == (20, 30)


def test_line_texts_fit_the_line_and_the_charset():
    texts = line_texts(40, np.random.default_rng(0), sources={"sample_exam": 1.0, "generic": 2.0})
    lines = [next(texts) for _ in range(500)]
    assert all(0 < len(t) <= 40 for t in lines)
    assert all(set(t) <= set(CHARSET) for t in lines)
    assert len(set(lines)) > 300
    assert set("".join(lines)) >= set("aeiouAEIO0123456789.,?()-")


def test_chop_keeps_words_and_order():
    rng = np.random.default_rng(0)
    sentence = "the quick brown fox jumps over the lazy dog " * 3
    chunks = chop(sentence, 15, rng, min_chars=10)
    assert " ".join(chunks) == sentence.strip()
    assert all(len(c) <= 15 for c in chunks)
    assert chop("abcdefghij", 4, rng) == ["abcd", "efgh", "ij"]
    assert to_charset("\u201cit\u2019s 5\u00b0\u201d \u2014 ok") == '"it\'s 5 deg" - ok'


def test_semeval_source_reads_only_the_train_split(tmp_path):
    folder = tmp_path / "semeval2013_task7_2way"
    folder.mkdir()
    (folder / "student_answers.csv").write_text(
        "corpus,split,question_id,student_answer_id,label_2way,student_answer,answer_match,count\n"
        "beetle,train,Q1,a1,correct,train answer one,,1\n"
        "beetle,test-unseen-answers,Q1,a2,correct,test answer must not appear,,1\n", encoding="utf-8")
    (folder / "questions_and_reference_answers.csv").write_text(
        "corpus,split,question_id,module,question_text,reference_answers_json,source_file\n"
        'beetle,train,Q1,m,q?,"[{""id"": ""r"", ""category"": ""BEST"", ""text"": ""train reference""}]",f\n'
        'beetle,test-unseen-questions,Q2,m,q?,"[{""id"": ""r"", ""category"": ""BEST"", ""text"": ""test ref""}]",f\n',
        encoding="utf-8")
    assert sorted(semeval_train_sentences(tmp_path)) == ["train answer one", "train reference"]
    texts = line_texts(80, np.random.default_rng(0), sources=("semeval",), data_dir=tmp_path)
    assert {next(texts) for _ in range(50)} == {"train answer one", "train reference"}
    with pytest.raises(ConfigError, match="data_dir"):
        next(line_texts(80, np.random.default_rng(0), sources=("semeval",)))
    with pytest.raises(InputError, match="student_answers.csv"):
        semeval_train_sentences(tmp_path / "nowhere")


def test_extra_heldout_fonts_and_printed_fonts_stay_out_of_training():
    from htr.synth.fonts import EXTRA_HELDOUT_FAMILIES, printed_fonts

    train = {f.family for f in list_fonts("train")}
    assert train.isdisjoint(EXTRA_HELDOUT_FAMILIES) and train.isdisjoint(HELDOUT_FAMILIES)
    assert {f.family for f in list_fonts("heldout_extra")} <= set(EXTRA_HELDOUT_FAMILIES)
    printed = printed_fonts()
    assert len(printed) >= 3 and not {f.name for f in printed} & {f.name for f in list_fonts("all")}
    assert not printed[0].missing("Kinetic energy 1/2 m v^2")


def test_letter_spacing_and_polarity_augmentations():
    font = get_font("caveat")
    clean = {f.name: 0.0 for f in dataclasses.fields(AugmentConfig) if f.name.endswith("_prob")}

    def render(**changes):
        aug = dataclasses.replace(AugmentConfig.clean(), **{**clean, **changes})
        return np.asarray(render_line("spacing between letters", font, np.random.default_rng(5), aug))

    tight = render(letter_spacing_prob=1.0, letter_spacing=(-0.05, -0.05))
    loose = render(letter_spacing_prob=1.0, letter_spacing=(0.15, 0.15))
    assert loose.shape[1] > tight.shape[1] + 0.15 * 48 * 15  # 20 letter gaps at 0.2 em of a 48 px em
    negative = render(invert_prob=1.0)
    assert np.median(negative) < 30 and negative.max() > 200  # light ink on dark paper
    with pytest.raises(ConfigError, match="augment.bleed"):
        AugmentConfig(bleed=(2.0, 1.0))
