"""Ablation runner (Tables III-V from cached components), sweep and launcher configs, a local multirun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from grading import ablations
from inkbase.cli import compose
from inkbase.runs import CONFIG_DIR, REPO_ROOT

RUBRIC = {"exam_id": "tiny", "questions": [
    {"id": "P", "subject": "physics", "text": "Why do both balls land together?", "max_points": 2, "granularity": 0.5,
     "reference_answer": "The mass cancels out, so both accelerate at g.",
     "concepts": [{"id": "cancels", "label": "mass cancels out", "weight": 1},
                  {"id": "same_acc", "label": "both accelerate at g", "weight": 1}],
     "edges": [{"source": "cancels", "relation": "causes", "target": "same_acc"}]},
    {"id": "E", "subject": "economics", "text": "What does a frost do to the coffee market?", "max_points": 2,
     "granularity": 0.5, "reference_answer": "Supply shifts left and the price rises.",
     "concepts": [{"id": "supply_left", "label": "supply curve shifts left", "weight": 1},
                  {"id": "price_up", "label": "the price goes up", "weight": 1}],
     "edges": []},
]}
ANSWERS = [
    ("p1", "P", "The mass cancels out, so both accelerate at g.", 2.0, ["cancels", "same_acc"]),
    ("p2", "P", "Both accelerate at g.", 1.0, ["same_acc"]),
    ("p3", "P", "The heavy ball falls faster.", 0.0, []),
    ("p4", "P", "", 0.0, []),
    ("e1", "E", "The supply curve shifts left and the price goes up.", 2.0, ["supply_left", "price_up"]),
    ("e2", "E", "The price goes up.", 1.0, ["price_up"]),
    ("e3", "E", "Coffee grows in Brazil.", 0.0, []),
    ("e4", "E", "The supply curve shifts left.", 1.0, ["supply_left"]),
]


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    root = tmp_path_factory.mktemp("exam")
    (root / "rubric.json").write_text(json.dumps(RUBRIC))
    (root / "answers.jsonl").write_text("".join(
        json.dumps({"answer_id": a, "question_id": q, "text": t, "reference_points": p, "concepts": c,
                    "category": "wrong" if not c else "full"}) + "\n" for a, q, t, p, c in ANSWERS))
    return root


def ablation_cfg(exam, out, *extra):
    return compose("ablation", [f"rubric={exam / 'rubric.json'}", f"answers={exam / 'answers.jsonl'}",
                                f"out_dir={out}", f"paths.cache_dir={exam / 'cache'}",
                                "thresholds=[0.0,0.7,1.0]", "alphas=[0.0,0.5,1.0]", "grader@other=similarity", *extra])


@pytest.fixture(scope="module")
def first_run(exam):
    metrics = ablations.run(ablation_cfg(exam, exam / "runs" / "first"))
    return exam / "runs" / "first", metrics


def test_tables_and_figures_are_written(first_run):
    folder, metrics = first_run
    rows = {"table3_threshold": 3, "table4_baselines": None, "table5_alpha": 3, "concepts_by_question_id": 2,
            "concepts_by_category": 2}  # 3 thresholds, 3 alphas, questions P and E, categories full and wrong
    for name, n in rows.items():
        table = pd.read_csv(folder / f"{name}.csv")
        assert n is None or len(table) == n, name
        assert (folder / f"{name}.md").read_text().count("\n|") == len(table) + 2  # header, rule, rows
        assert (folder / f"{name}.tex").read_text().count("\\\\\n") == len(table) + 1  # header and rows
    assert list(pd.read_csv(folder / "table3_threshold.csv")["threshold"]) == [0.0, 0.7, 1.0]
    assert list(pd.read_csv(folder / "table5_alpha.csv")["alpha"]) == [0.0, 0.5, 1.0]
    for fig in ("fig_threshold", "fig_alpha"):
        assert (folder / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "metrics.json").exists() and not metrics["components_cached"]
    assert len((folder / "components.jsonl").read_text().splitlines()) == len(ANSWERS)


def test_threshold_table_counts(first_run):
    folder, _ = first_run
    table = pd.read_csv(folder / "table3_threshold.csv").set_index("threshold")
    pairs = sum(len(q["concepts"]) for q in RUBRIC["questions"] for a in ANSWERS if a[1] == q["id"])
    positives = sum(len(a[4]) for a in ANSWERS)
    assert table.loc[0.0, "pairs"] == pairs and table.loc[0.0, "positives"] == positives
    # Every similarity is >= 0: at t = 0 everything is matched.
    assert table.loc[0.0, "recall"] == 1.0 and table.loc[0.0, "precision"] == pytest.approx(positives / pairs)
    assert table.loc[0.7, "f1"] >= table.loc[0.0, "f1"]


def test_alpha_table_ends_are_the_single_systems(first_run):
    folder, _ = first_run
    table4 = pd.read_csv(folder / "table4_baselines.csv").set_index("system")
    table5 = pd.read_csv(folder / "table5_alpha.csv").set_index("alpha")
    assert set(table5.columns) == {"physics", "economics", "overall"}
    assert table5.loc[1.0, "overall"] == pytest.approx(table4.loc["KG only (t=0.7)", "pearson_r"])
    assert table5.loc[0.0, "overall"] == pytest.approx(table4.loc["similarity only", "pearson_r"])
    assert list(table4.index)[0] == "keyword" and list(table4.index)[-1].startswith("hybrid KG + similarity")


def test_second_run_reads_cached_components(exam, first_run, monkeypatch):
    def recompute(*args, **kwargs):
        raise AssertionError("components were recomputed")

    monkeypatch.setattr(ablations, "compute_components", recompute)
    metrics = ablations.run(ablation_cfg(exam, exam / "runs" / "second", "kg.threshold=0.6", "alpha=0.3"))
    assert metrics["components_cached"] and metrics["kg_threshold"] == 0.6
    assert metrics["components"] == first_run[1]["components"]
    # A knob the components depend on gives another cache entry.
    assert ablations.components_key(ablation_cfg(exam, "x", "kg.spans.window=0")) != ablations.components_key(
        ablation_cfg(exam, "x"))


def test_collect_tabulates_run_folders(exam, first_run):
    ablations.run(ablation_cfg(exam, exam / "runs" / "second-collect", "kg.threshold=0.6"))
    metrics = ablations.run(ablation_cfg(exam, exam / "collected", f"collect={exam / 'runs'}"))
    table = pd.read_csv(exam / "collected" / "runs.csv")
    assert metrics["runs"] == len(table) >= 2 and {"best_threshold", "f1", "r_keyword"} <= set(table.columns)


def test_concept_prf_known_values():
    records = [
        {"question_id": "A", "concept_ids": ["x", "y"], "similarity": [0.9, 0.2], "gold_concepts": ["x", "y"]},
        {"question_id": "A", "concept_ids": ["x", "y"], "similarity": [0.8, 0.1], "gold_concepts": []},
        {"question_id": "B", "concept_ids": ["z"], "similarity": [0.95], "gold_concepts": ["z"]},
        {"question_id": "B", "concept_ids": ["z"], "similarity": [0.9], "gold_concepts": None},  # not annotated
    ]
    m = ablations.concept_prf(records, 0.5)  # TP = 2 (x, z), FP = 1, FN = 1 (y)
    assert (m["precision"], m["recall"], m["pairs"], m["positives"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3),
                                                                        5, 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 1.0) / 2)  # A: P = R = 1/2; B: perfect


def test_bad_gold_concepts_name_the_answer(exam, tmp_path):
    from inkbase.errors import InputError

    bad = tmp_path / "answers.jsonl"
    bad.write_text(json.dumps({"answer_id": "x", "question_id": "P", "text": "hi", "concepts": ["nope"]}) + "\n")
    cfg = ablation_cfg(exam, tmp_path / "run", f"answers={bad}")
    with pytest.raises(InputError, match="answer x: concepts"):
        ablations.run(cfg)


@pytest.mark.parametrize("config,overrides", [
    ("grade", ["+sweep=kg_threshold"]), ("grade", ["+sweep=hybrid_alpha"]), ("ablation", ["+sweep=ablation_matcher"]),
    ("ablation", ["hydra/launcher=slurm", "hydra.launcher.partition=cpu"]), ("ablation", ["hydra/launcher=local"]),
    *[("ablation", [f"+ablation={p.stem}"]) for p in sorted((CONFIG_DIR / "ablation").glob("*.yaml"))],
    ("benchmark_grading_speed", []),
])
def test_configs_compose(config, overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from inkbase.cli import register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = hydra_compose(config_name=config, overrides=[*overrides, "rubric=r", "answers=a"]
                            if config == "grade" else overrides, return_hydra_config=True)
    if "+sweep=kg_threshold" in overrides:
        assert cfg.grader._target_.endswith("KGGrader") and "grader.threshold" in cfg.hydra.sweeper.params
    if "+sweep=hybrid_alpha" in overrides:
        assert cfg.grader._target_.endswith("HybridGrader") and "grader.alpha" in cfg.hydra.sweeper.params
    if "hydra/launcher=slurm" in overrides:
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.partition == "cpu"
    if "+ablation=concept_testset" in overrides:
        assert cfg.thresholds == [cfg.kg.threshold] and "concept_testset" in cfg.answers


def test_local_multirun_gives_each_job_its_own_run_folder(exam, tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "grade.py"), "-m", "grader=keyword",
                    "grader.min_overlap=0.5,1.0", f"rubric={exam / 'rubric.json'}", f"answers={exam / 'answers.jsonl'}",
                    f"paths.cache_dir={exam / 'cache'}", f"hydra.sweep.dir={sweep}"],
                   check=True, env=env, capture_output=True, timeout=300)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, overlap in zip(jobs, (0.5, 1.0), strict=True):
        assert (job / "scores.jsonl").exists() and (job / "metrics.json").exists()
        assert f"grader.min_overlap={overlap}" in Path(job / "overrides.yaml").read_text()
