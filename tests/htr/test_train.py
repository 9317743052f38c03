"""Training plumbing on the CPU with tiny models: configs, step plan, GPU-side batches, a short run that
writes its history and resumes from a checkpoint, manifests with bad images, and the data_prep scripts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from htr import train, train_seq2seq
from htr.data import read_manifest
from htr.model import load_bundle
from htr.train import GpuAugment, StepPlan
from htr.train_seq2seq import ReplayPool
from inkbase.cli import compose
from inkbase.jsonio import read_jsonl

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = ["model.image_height=32", "model.image_width=128", "model.patch_height=16", "model.patch_width=8",
              "model.encoder.hidden_size=32", "model.encoder.layers=1", "model.encoder.heads=2",
              "model.encoder.mlp_size=64", "model.decoder.hidden_size=32", "model.decoder.layers=1",
              "model.decoder.heads=2", "model.decoder.ffn_size=64", "model.max_length=24"]
TINY_SYNTH = ["data.text.sources={generic: 1.0, semeval: 0, sample_exam: 0}", "data.text.max_chars=10",
              "data.train_lines=8", "data.val_lines=4", "data.heldout_lines=4", "data.num_workers=0"]
TINY_TRAINER = ["trainer.epochs=4", "trainer.batch_size=4", "trainer.eval_batch_size=4", "trainer.learning_rate=1e-3",
                "trainer.warmup_steps=1", "trainer.max_target_length=16", "trainer.final_num_beams=2",
                "trainer.logging_steps=1", "trainer.precision=no"]


def load_script(rel: str):
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_"), REPO / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("overrides", [
    [], ["experiment=htr_default_stage1"], ["experiment=htr_default_stage2", "model.init_from=/m"],
    ["experiment=lanke_stage1"],
    ["experiment=lanke_stage2", "model.init_from=/m", "data.train_manifest=a", "data.val_manifest=b"],
    ["model=vit_minilm"], ["model=trocr_base"], ["data=manifest", "data.train_manifest=a", "data.val_manifest=b"],
    ["logger=wandb"],
])
def test_train_configs_compose(overrides):
    cfg = compose("train_htr", overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("name,overrides", [
    ("eval_htr", ["manifest=m.jsonl"]), ("eval_htr", ["manifest=m.jsonl", "recognizer=rapidocr"]),
    ("eval_htr", ["manifest=m.jsonl", "recognizer=tesseract"]), ("transcribe", ["image=p.png"]),
])
def test_eval_configs_compose(name, overrides):
    OmegaConf.to_container(compose(name, overrides), resolve=True, throw_on_missing=True)


def test_lanke_experiments_carry_table_one():
    s1 = compose("train_htr", ["experiment=lanke_stage1"]).trainer
    s2 = compose("train_htr", ["experiment=lanke_stage2", "model.init_from=/m"]).trainer
    assert (s1.learning_rate, s1.warmup_steps, s1.batch_size, s1.epochs) == (5e-5, 500, 8, 10)
    assert (s2.learning_rate, s2.warmup_steps, s2.batch_size, s2.epochs) == (1e-5, 20, 4, 30)
    assert s1.weight_decay == s2.weight_decay == 0.01 and s1.max_target_length == s2.max_target_length == 128
    assert s1.precision == s2.precision == "fp16"


def test_step_plan_schedule_and_epoch_ends():
    plan = StepPlan(max_total=100, warmup=10, epochs=4, budget_s=None)
    assert plan.lr_factor(0) == pytest.approx(0.1) and plan.lr_factor(9) == pytest.approx(1.0)
    assert plan.lr_factor(55) == pytest.approx(0.5) and plan.lr_factor(100) == 0.0
    assert [plan.epoch_end(k) for k in range(1, 5)] == [25, 50, 75, 100]
    plan.total = 40  # a time budget shortens the run: the decay and the epochs shrink with it
    assert plan.lr_factor(40) == 0.0 and plan.epoch_end(4) == 40


def test_replay_pool_mixes_fresh_and_stored_lines():
    pool = ReplayPool(size=6, batch_size=5, shape=(1, 4, 8), max_len=6, device=torch.device("cpu"))
    first = torch.full((2, 1, 4, 8), 7, dtype=torch.uint8)
    labels = torch.tensor([[5, 2], [6, 2]])
    images, out_labels = pool.mix(first, labels)
    assert images.shape[0] == 2  # nothing stored yet besides these
    second = torch.full((2, 1, 4, 8), 9, dtype=torch.uint8)
    images, out_labels = pool.mix(second, torch.tensor([[8, 9, 2], [8, 2, -100]]))
    assert images.shape[0] == 5 and (images[:2] == 9).all()
    assert out_labels.shape == (5, 3) and (out_labels[:2] == torch.tensor([[8, 9, 2], [8, 2, -100]])).all()


def test_gpu_augment_keeps_shape_and_range():
    aug = GpuAugment(**OmegaConf.to_container(compose("train_htr").trainer.gpu_augment))
    ink = torch.zeros(3, 1, 32, 128)
    ink[:, :, 10:20, 10:60] = 1.0
    out = aug(ink.clone())
    assert out.shape == ink.shape and out.min() >= 0 and out.max() <= 1
    assert out.sum() > 0 and not torch.equal(out, ink)


def test_tiny_run_writes_history_and_resumes_from_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = compose("train_htr", [*TINY_MODEL, *TINY_SYNTH, *TINY_TRAINER, f"out_dir={out}", "+trainer.seq2seq.replay_size=16",
                                "+trainer.seq2seq.replay_batch_size=6", "trainer.gpu_augment.enabled=true"])
    # Interrupt the first attempt after the checkpoint of step 2 (epochs are 2 steps: 8 lines, batch 4).
    original = train_seq2seq.PlanCallback.on_step_end

    def interrupt(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(train_seq2seq.PlanCallback, "on_step_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    assert [r["step"] for r in read_jsonl(out / "history.jsonl")] == [2]
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(train_seq2seq.PlanCallback, "on_step_end", original)
    metrics = train.run(cfg)  # same out_dir and config: resumes from checkpoint-2
    rows = read_jsonl(out / "history.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6, 8] and [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert all(r["train_loss"] is not None and r["cer"] is not None for r in rows)
    assert "resumed" in json.loads((out / "run.json").read_text())
    assert metrics["steps"] == 8 and {"val_cer", "val_wer", "heldout_cer"} <= set(metrics)
    assert (out / "table.md").read_text().startswith("|   Epoch |")
    assert (out / "table.csv").exists() and (out / "curve.png").stat().st_size > 0
    assert load_bundle(out / "model").transcribe([Image.new("L", (60, 20), 255)], num_beams=1)


def test_manifest_training_skips_and_names_bad_images(train_on_bad_manifest):
    metrics, skipped = train_on_bad_manifest([*TINY_MODEL, *TINY_TRAINER])
    assert skipped == {"bad.png"}
    assert metrics["steps"] == 1  # 3 readable lines, batch 4


def test_iam_prepare_reads_a_dataset_saved_to_disk(tmp_path):
    import datasets

    img = Image.fromarray(np.full((20, 50), 200, np.uint8))
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"image": [img, img], "text": ["a move", "to stop  Mr."]}, features=features),
        "test": datasets.Dataset.from_dict({"image": [img], "text": ["Gaitskell"]}, features=features)})
    dd.save_to_disk(tmp_path / "iam")
    prepare = load_script("data_prep/iam/prepare.py")
    assert prepare.main(["--source", str(tmp_path / "iam"), "--out", str(tmp_path / "out")]) == 0
    records = read_manifest(tmp_path / "out" / "train.jsonl")
    assert [r.text for r in records] == ["a move", "to stop Mr."] and all(r.image.is_file() for r in records)
    assert len(read_manifest(tmp_path / "out" / "test.jsonl")) == 1


def test_domain_prepare_from_folder_and_rendered(tmp_path, capsys):
    prepare = load_script("data_prep/domain/prepare.py")
    (tmp_path / "lines").mkdir()
    for i in range(10):
        Image.fromarray(np.full((20, 50), 200, np.uint8)).save(tmp_path / "lines" / f"{i}.png")
    (tmp_path / "lines" / "broken.png").write_bytes(b"\x89PNG broken")
    texts = "file,text\n" + "".join(f"{i}.png,answer {i}\n" for i in range(10)) + "broken.png,lost\n"
    (tmp_path / "texts.csv").write_text(texts)
    assert prepare.main(["folder", "--images", str(tmp_path / "lines"), "--texts", str(tmp_path / "texts.csv"),
                         "--out", str(tmp_path / "dom"), "--val-fraction", "0.2"]) == 0
    assert "broken.png" in capsys.readouterr().err
    train_rows, val_rows = read_manifest(tmp_path / "dom" / "train.jsonl"), read_manifest(tmp_path / "dom" / "val.jsonl")
    assert (len(train_rows), len(val_rows)) == (8, 2)
    answers = [{"answer_id": f"A{i}", "question_id": "Q1", "text": "The ball falls with g = 9.8 m/s^2."} for i in range(3)]
    (tmp_path / "exam").mkdir()
    (tmp_path / "exam" / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    assert prepare.main(["render", "--sample-exam-dir", str(tmp_path / "exam"), "--out", str(tmp_path / "ren"),
                         "--copies", "1", "--max-chars", "20", "--val-fraction", "0.34"]) == 0
    rendered = [json.loads(x) for x in (tmp_path / "ren" / "train.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (tmp_path / "ren" / "val.jsonl").read_text().splitlines()]
    assert rendered and val and not {r["answer_id"] for r in rendered} & {r["answer_id"] for r in val}
    assert all((tmp_path / "ren" / r["image"]).is_file() for r in rendered)
    assert prepare.main(["folder", "--images", str(tmp_path), "--texts", str(tmp_path / "nope.csv"),
                         "--out", str(tmp_path / "x")]) == 2


@pytest.mark.data
def test_handwriting_lines_manifest_points_at_the_41_real_lines(data_dir, tmp_path):
    prepare = load_script("data_prep/handwriting_lines/prepare.py")
    assert prepare.main(["--data-dir", str(data_dir), "--out", str(tmp_path)]) == 0
    records = read_manifest(tmp_path / "lines.jsonl")
    assert len(records) == 41 and all(r.image.is_file() for r in records)
    assert records[0].text == "or work on line level"
