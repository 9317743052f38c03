"""The CPU recogniser benchmark runs end to end on a few lines and writes its results files."""

from __future__ import annotations

import json

from benchmarks import recognizers
from inkbase.cli import compose
from inkbase.jsonio import read_jsonl


def test_recognizer_benchmark_interleaves_rounds_and_writes_results(tmp_path):
    images, texts = recognizers.render_lines(2, seed=0, max_chars=30)
    rows = []
    for i, (image, text) in enumerate(zip(images, texts, strict=True)):
        image.save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "text": text})
    (tmp_path / "empty.png").write_bytes(b"")
    rows.append({"image": "empty.png", "text": "nothing"})
    (tmp_path / "lines.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose("benchmark_recognizers", [f"out_dir={tmp_path / 'run'}", f"manifest={tmp_path / 'lines.jsonl'}",
                                            "rounds=2", "batch_size=2", "num_beams=2", "threads=1"])
    result = recognizers.run(cfg)
    names = [r["recognizer"] for r in result["rows"]]
    assert names == ["ours", "ours_no_lm", "ours_torch", "rapidocr"] and result["lines"] == 2
    ours, no_lm, plain, rapid = result["rows"]
    # onnxruntime computes what the PyTorch graph does: the same text, line for line.
    assert ours["same_as_torch"] == 1.0 and ours["cer"] == plain["cer"] < 0.05 and no_lm["cer"] < 0.1
    assert "LM english" in ours["setting"] and "no LM" in no_lm["setting"] and result["lm"] == "english"
    assert result["ours_vs_rapidocr"] == round(ours["lines_per_s"] / rapid["lines_per_s"], 3)
    assert len(result["load_before"]) == len(result["load_after"]) == 3
    timed = read_jsonl(tmp_path / "run" / "rows.jsonl")
    # Each round times every recogniser once, starting with a different one.
    assert [t["recognizer"] for t in timed] == ["ours", "ours_no_lm", "ours_torch", "rapidocr",
                                                "ours_no_lm", "ours_torch", "rapidocr", "ours"]
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == result
    assert (tmp_path / "run" / "results.md").read_text().count("\n|") == 6  # header, rule, 4 rows
    skipped = read_jsonl(tmp_path / "run" / "skipped.jsonl")
    assert [s["image"] for s in skipped] == [str(tmp_path / "empty.png")]
