"""The synthetic-rendering and segmentation benchmarks run from their configs and write their run folders."""

from __future__ import annotations

import json

from benchmarks import segmentation, synth_speed
from inkbase.cli import compose


def test_segmentation_benchmark_separates_ours_from_lanke_rules(tmp_path):
    cfg = compose("benchmark_segmentation", [f"out_dir={tmp_path / 'run'}", "cases=3",
                                             "~settings.normal_spacing",
                                             "~settings.rotated_deskewed", "~settings.rotated_no_deskew"])
    rows = segmentation.run(cfg)
    by = {r["segmenter"]: r for r in rows}
    assert [r["setting"] for r in rows] == ["touching_lines"] * 2 and by["ours"]["cases"] == 3
    # Touching lines never drop below the paper's 2 % threshold: only the valley split separates them.
    assert by["ours"]["count_accuracy"] == 1.0 and by["Lanke rules only"]["count_accuracy"] == 0.0
    assert by["ours"]["mean_iou"] > 0.8 > 0.5 > by["Lanke rules only"]["mean_iou"]
    saved = [json.loads(line) for line in (tmp_path / "run" / "rows.jsonl").read_text().splitlines()]
    assert saved == rows
    assert (tmp_path / "run" / "results.md").read_text().count("| touching_lines |") == 2


def test_synth_rendering_benchmark_writes_its_rates(tmp_path):
    cfg = compose("benchmark_synth_rendering", [f"out_dir={tmp_path / 'run'}", "lines=10", "rounds=1"])
    result = synth_speed.run(cfg)
    assert result["lines_per_round"] == 10 and result["sources"] == ["sample_exam", "generic"]
    # Augmentation (paper, blur, noise, warps) is work on top of rasterising the font alone.
    assert 0 < result["augmented_lines_per_s"] < result["clean_lines_per_s"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["augmented_over_clean"] == result[
        "augmented_over_clean"]
