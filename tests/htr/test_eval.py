"""CER/WER against hand-computed values, and scripts/eval_htr's outputs on a manifest with bad images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from htr import evaluate, recognize
from htr.evaluate import error_rates, normalize_text
from inkbase.cli import compose
from inkbase.jsonio import read_jsonl


def test_error_rates_match_hand_counts():
    # "abcd" -> "abd": 1 deletion. "hello world" -> "helo world!": 1 deletion + 1 insertion.
    # CER = 3 edits / (4 + 11) reference characters; words: abcd->abd, hello->helo, world->world! = 3 / 3.
    rates = error_rates(["abcd", "hello world"], ["abd", "helo world!"])
    assert rates["char_errors"] == 3 and rates["ref_chars"] == 15
    assert rates["cer"] == pytest.approx(0.2)
    assert rates["wer"] == pytest.approx(1.0)
    # Corpus-level, not a mean of per-line rates: the per-line mean here would be (1/4 + 2/11) / 2.
    assert rates["cer"] != pytest.approx((1 / 4 + 2 / 11) / 2)
    assert error_rates(["the cat sat"], ["the cat sat"])["wer"] == 0.0
    assert error_rates(["one two"], ["one"])["wer"] == pytest.approx(0.5)


def test_text_normalisation_before_scoring():
    assert normalize_text("  \u201cIt\u2019s\u201d  \u2013 ok\n") == "\"It's\" - ok"
    assert error_rates(["\u201cHi\u201d there"], ['"Hi"   there'])["cer"] == 0.0
    # An empty reference line still counts its predicted characters and words as insertions.
    rates = error_rates(["", "ab"], ["x y", "ab"])
    assert rates["cer"] == pytest.approx(3 / 2) and rates["wer"] == pytest.approx(2 / 1)
    with pytest.raises(ValueError):
        error_rates([""], ["a"])


class EchoRecognizer(recognize.Recognizer):
    """Returns a fixed text per image width, so the expected CER can be computed by hand."""

    name = "echo"

    def __init__(self, **_):
        pass

    def recognize(self, images):
        return ["abd" if im.width == 40 else "helo world!" for im in images]


def test_eval_writes_predictions_and_metrics_and_skips_bad_images(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(recognize.RECOGNIZERS, "echo", EchoRecognizer)
    Image.fromarray(np.full((20, 40), 200, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((20, 90), 200, np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [{"image": "a.png", "text": "abcd"}, {"image": "broken.png", "text": "x"},
            {"image": "b.png", "text": "hello world"}, {"image": "missing.png", "text": "y"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose("eval_htr", [f"manifest={tmp_path / 'm.jsonl'}", f"out_dir={tmp_path / 'run'}",
                               "recognizer.name=echo"])
    metrics = evaluate.run(cfg)
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "broken.png" in out and "missing.png" in out
    assert metrics["n"] == 2 and metrics["n_skipped"] == 2
    assert metrics["cer"] == pytest.approx(0.2) and metrics["wer"] == pytest.approx(1.0)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["cer"] == pytest.approx(0.2)
    preds = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert [(p["reference"], p["prediction"]) for p in preds] == [("abcd", "abd"), ("hello world", "helo world!")]
    assert {p["image"].rsplit("/", 1)[-1] for p in read_jsonl(tmp_path / "run" / "skipped.jsonl")} == {
        "broken.png", "missing.png"}


def test_eval_rejects_malformed_manifest(tmp_path):
    from inkbase.errors import InputError

    (tmp_path / "m.jsonl").write_text('{"image": "a.png"}\n')
    cfg = compose("eval_htr", [f"manifest={tmp_path / 'm.jsonl'}", f"out_dir={tmp_path / 'run'}"])
    with pytest.raises(InputError, match="line 1: text"):
        evaluate.run(cfg)


def test_eval_of_a_model_records_which_weights_it_scored(tmp_path):
    from htr.model import DEFAULT_MODEL_DIR
    from inkbase.runs import file_digest

    Image.fromarray(np.full((32, 120), 255, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "text": "x"}) + "\n")
    cfg = compose("eval_htr", [f"manifest={tmp_path / 'm.jsonl'}", f"out_dir={tmp_path / 'run'}", "recognizer=model"])
    metrics = evaluate.run(cfg)
    assert metrics["model_dir"] == str(DEFAULT_MODEL_DIR)
    assert metrics["weights"] == file_digest(DEFAULT_MODEL_DIR) and metrics["weights"].startswith("sha256:")
