"""CTC recognisers: the ONNX graph runner against onnxruntime, PP-OCR's classifier cut to our charset,
CTC decoding against brute force, save/load in fp16, and short training runs that resume."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from htr import train, train_ctc
from htr.ctc import CTCRecognizer, batch_ink, greedy_decode, ppocr_onnx_path, prefix_beam_search
from htr.evaluate import error_rates
from htr.model import build_model, load_bundle
from inkbase.cli import compose
from inkbase.errors import ConfigError, InputError
from inkbase.jsonio import read_jsonl

TINY_CRNN = ["model=crnn_ctc", "model.crnn.channels=[4,8,8,8,8]", "model.crnn.rnn_hidden=8",
             "model.crnn.rnn_layers=1", "model.image_width=256"]
TINY_SYNTH = ["data.text.sources={generic: 1.0, semeval: 0, sample_exam: 0}", "data.text.max_chars=10",
              "data.train_lines=8", "data.val_lines=4", "data.heldout_lines=4", "data.num_workers=0"]
TINY_TRAINER = ["trainer.epochs=4", "trainer.batch_size=4", "trainer.eval_batch_size=4", "trainer.learning_rate=1e-3",
                "trainer.warmup_steps=1", "trainer.final_num_beams=2", "trainer.logging_steps=1",
                "trainer.precision=no", "trainer.gpu_augment.enabled=true"]


def printed_line(text: str, size: int = 40) -> Image.Image:
    from htr.synth.pages import printed_font_path

    font = ImageFont.truetype(printed_font_path(), size)
    width = int(font.getlength(text)) + 40
    image = Image.new("L", (width, size + 30), 255)
    ImageDraw.Draw(image).text((20, 12), text, font=font, fill=0)
    return image


def test_onnx_graph_matches_onnxruntime_on_the_ppocr_recogniser():
    import onnx
    import onnxruntime as ort

    from htr.onnx_graph import OnnxGraph

    path = ppocr_onnx_path()
    graph = OnnxGraph(onnx.load(str(path)), "x", "fetch_name_0").eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for width in (96, 333):  # widths that are and are not multiples of the 8 px column
        x = rng.uniform(-1, 1, (2, 3, 48, width)).astype(np.float32)
        expected = session.run(None, {"x": x})[0]
        with torch.no_grad():
            got = graph(torch.from_numpy(x)).numpy()
        assert got.shape == expected.shape == (2, -(-width // 8), 18710)
        np.testing.assert_allclose(got, expected, atol=1e-4)
    # Batch-norm statistics are buffers (frozen); convolution and matrix weights are trainable.
    assert graph.stats._buffers and all(p.requires_grad for p in graph.parameters())


def test_onnx_graph_names_an_unsupported_operator():
    from onnx import TensorProto, helper

    from htr.onnx_graph import OnnxGraph

    node = helper.make_node("Tanh", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ConfigError, match="Tanh"):
        OnnxGraph(helper.make_model(graph), "x", "y")


def test_ppocr_start_reads_printed_text_with_our_character_set():
    """The classifier rows are taken over character by character: before any training the model reads
    clean printed lines (a wrong mapping would scramble every character)."""
    bundle = build_model(compose("train_htr", ["model=ppocr_ctc"]).model)
    bundle.model.eval()
    texts = ["The quick brown fox jumps over 13 lazy dogs.", "Pressure = force / area (in Pa)"]
    out = bundle.transcribe([printed_line(t) for t in texts], num_beams=1)
    assert error_rates(texts, out)["cer"] < 0.1, out
    assert bundle.model.classifier.out_features == len(bundle.tokenizer)


def brute_force_best(log_probs: np.ndarray, blank: int) -> tuple[int, ...]:
    scores: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(log_probs.shape[1]), repeat=log_probs.shape[0]):
        collapsed = tuple(c for i, c in enumerate(path) if c != blank and (i == 0 or path[i - 1] != c))
        scores[collapsed] = np.logaddexp(scores.get(collapsed, -np.inf), sum(log_probs[t, c] for t, c in enumerate(path)))
    return max(scores, key=scores.get)


def test_prefix_beam_search_finds_the_most_probable_labelling():
    # Two frames, blank 0.6 / "a" 0.4 each: the best path is blank-blank (""), but "a" has
    # 0.16 + 0.24 + 0.24 = 0.64 of the probability, so the labelling search must return "a".
    lp = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    assert greedy_decode(lp[None], [2], blank=0) == [[]]
    assert prefix_beam_search(lp, beam=5, blank=0) == [1]
    rng = np.random.default_rng(1)
    for _ in range(20):
        logits = rng.normal(0, 2, (5, 3))
        lp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        assert tuple(prefix_beam_search(lp, beam=64, blank=0, prune=-np.inf)) == brute_force_best(lp, blank=0)


def test_greedy_decode_merges_repeats_and_drops_blanks():
    ids = np.array([[1, 1, 0, 1, 2, 2, 0, 0, 3]])
    lp = np.where(np.eye(4, dtype=bool)[ids], 0.0, -np.inf)
    assert greedy_decode(lp, [9], blank=0) == [[1, 1, 2, 3]]
    assert greedy_decode(lp, [4], blank=0) == [[1, 1]]  # frames past the length are ignored


def test_crnn_save_half_and_reload(tmp_path):
    torch.manual_seed(0)
    bundle = build_model(compose("train_htr", TINY_CRNN).model)
    bundle.model.eval()
    bundle.save(tmp_path / "m", half=True)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "inkgrade_ctc" and config["backbone"] == "crnn"
    again = load_bundle(tmp_path / "m")
    assert isinstance(again.model, CTCRecognizer) and again.is_ctc and again.decoder_start_token_id is None
    ink, widths = batch_ink([np.full((32, 50), 200, np.uint8), np.zeros((32, 120), np.uint8)])
    with torch.no_grad():
        a, b = bundle.model(ink, widths)["log_probs"], again.model(ink, widths)["log_probs"]
    assert ink.shape == (2, 1, 32, 120) and torch.allclose(a, b, atol=0.05)
    # Weights that do not fit the configured model are an error naming the file.
    config["rnn_hidden"] = 16
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="model.safetensors"):
        load_bundle(tmp_path / "m")


def test_crnn_rejects_a_height_it_cannot_pool_to_one_row():
    with pytest.raises(ConfigError, match="image_height"):
        build_model(compose("train_htr", [*TINY_CRNN, "model.image_height=64"]).model)


def test_ctc_run_writes_history_and_resumes_after_an_interruption(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = compose("train_htr", [*TINY_CRNN, *TINY_SYNTH, *TINY_TRAINER, f"out_dir={out}"])
    # Interrupt the first attempt in step 3, after the checkpoint of step 2 (epochs are 2 steps).
    original = train.GpuAugment.__call__
    calls = {"n": 0}

    def interrupt(self, ink):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, ink)

    monkeypatch.setattr(train.GpuAugment, "__call__", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    assert [r["step"] for r in read_jsonl(out / "history.jsonl")] == [2]
    assert (out / "checkpoints" / train_ctc.CHECKPOINT / "optimizer.pt").is_file()
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(train.GpuAugment, "__call__", original)
    metrics = train.run(cfg)  # same out_dir and config: resumes from step 2
    rows = read_jsonl(out / "history.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6, 8] and [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert all(r["train_loss"] is not None and r["cer"] is not None for r in rows)
    assert "resumed" in json.loads((out / "run.json").read_text())
    assert metrics["steps"] == 8 and {"val_cer", "val_wer", "heldout_cer"} <= set(metrics)
    assert (out / "table.md").read_text().startswith("|   Epoch |") and (out / "curve.png").stat().st_size > 0
    texts = load_bundle(out / "model").transcribe([Image.new("L", (60, 20), 255)], num_beams=2)
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_ppocr_fine_tuning_steps_lower_the_loss_on_the_lines_it_sees(tmp_path):
    """Two optimizer steps on the same batch through the real training loop's pieces (the shipped path)."""
    bundle = build_model(compose("train_htr", ["model=ppocr_ctc"]).model)
    model = bundle.model.train()
    lines = ["Kinetic energy", "grows with mass"]
    items = [(bundle.image_processor.line(printed_line(t)), bundle.tokenizer(t, add_special_tokens=False).input_ids, t)
             for t in lines]
    batch = train_ctc.collate(items, model.reduction)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(3):
        loss = model(batch["ink"], batch["widths"], batch["labels"])["loss"]
        losses.append(float(loss.detach()))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0]


def test_onnxruntime_inference_uses_the_current_weights():
    """CPU inference runs the fine-tuned weights in onnxruntime; it must give what the PyTorch graph gives,
    also after the weights changed (the onnxruntime copy is rebuilt when the model was trained)."""
    model = build_model(compose("train_htr", ["model=ppocr_ctc"]).model).model
    ink, widths = batch_ink([np.random.default_rng(0).integers(0, 255, (48, w), dtype=np.uint8) for w in (90, 200)])

    def outputs(use_ort: bool) -> torch.Tensor:
        model.onnxruntime = use_ort
        with torch.inference_mode():
            return model(ink, widths)["log_probs"]

    model.eval()
    before = outputs(True)
    model.train()
    with torch.no_grad():
        next(iter(model.backbone.graph.params.values())).mul_(1.5)  # "fine-tuning" changes a weight
    model.eval()
    after_ort, after_torch = outputs(True), outputs(False)
    assert not torch.allclose(before, after_ort, atol=1e-3)
    torch.testing.assert_close(after_ort, after_torch, atol=1e-4, rtol=1e-4)


def test_ctc_manifest_training_skips_and_names_bad_images(train_on_bad_manifest):
    metrics, skipped = train_on_bad_manifest([*TINY_CRNN, *TINY_TRAINER])
    assert skipped == {"bad.png"}
    # 3 readable lines, batch 4: one step, after which the tiny CRNN still emits only blanks (CER 1).
    assert metrics["steps"] == 1 and metrics["val_cer"] == 1.0


@pytest.mark.parametrize("overrides,key", [
    ([*TINY_CRNN, "+trainer.seq2seq.replay_size=16"], "trainer.seq2seq.replay_size"),
    ([*TINY_CRNN, "+trainer.ctc.bogus=1"], "trainer.ctc.bogus"),
    (["model=vit_char", "+trainer.ctc.l2sp=0.1"], "trainer.ctc.l2sp"),
    (["model=vit_char", "+trainer.seq2seq.ctc_weight=-1"], "trainer.seq2seq.ctc_weight"),
])
def test_each_family_rejects_keys_it_does_not_read(overrides, key, tmp_path):
    cfg = compose("train_htr", [*overrides, f"out_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train.run(cfg)
    assert not (tmp_path / "run").exists()  # refused before anything ran


def test_param_groups_freeze_the_input_side_and_decay_towards_it():
    model = build_model(compose("train_htr", TINY_CRNN).model).model
    t = compose("train_htr", ["trainer.learning_rate=1e-3", "trainer.weight_decay=0.01"]).trainer
    groups = train_ctc.param_groups(model, t, train.CTCOptions(freeze_backbone=0.5, layer_decay=0.5))
    backbone = list(model.backbone.parameters())
    frozen = [p for p in backbone if not p.requires_grad]
    assert len(frozen) == round(0.5 * len(backbone)) and all(p.requires_grad for p in backbone[len(frozen):])
    assert frozen == backbone[:len(frozen)]  # the input side
    by_param = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert all(id(p) not in by_param for p in frozen)
    assert by_param[id(model.classifier.weight)] == pytest.approx(1e-3)
    trained = backbone[len(frozen):]
    assert by_param[id(trained[0])] == pytest.approx(1e-3 * 0.5 ** train_ctc.LAYER_BANDS)
    assert by_param[id(trained[-1])] == pytest.approx(1e-3 * 0.5)
    lrs = [by_param[id(p)] for p in trained]
    assert lrs == sorted(lrs)  # never faster nearer the input


def test_l2sp_penalty_measures_the_distance_to_the_start_weights():
    model = build_model(compose("train_htr", TINY_CRNN).model).model
    anchor = train_ctc.StartAnchor(model, weight=0.5)
    assert float(anchor.penalty(model).detach()) == 0.0
    with torch.no_grad():
        model.classifier.bias.add_(2.0)
    assert float(anchor.penalty(model).detach()) == pytest.approx(0.5 * 4.0 * model.classifier.bias.numel())


def test_ctc_run_honours_grad_accum_and_keeps_the_best_checkpoint_on_selection_lines(
        tmp_path, monkeypatch, manifest_with_bad_image):
    out = tmp_path / "run"
    cfg = compose("train_htr", [*TINY_CRNN, *TINY_SYNTH, *TINY_TRAINER, f"out_dir={out}", "trainer.epochs=2",
                                "trainer.grad_accum=2", f"data.select_manifest={manifest_with_bad_image}",
                                "+trainer.ctc.l2sp=0.01"])
    original = train.GpuAugment.__call__
    calls = {"n": 0}

    def count(self, ink):
        calls["n"] += 1
        return original(self, ink)

    monkeypatch.setattr(train.GpuAugment, "__call__", count)
    metrics = train.run(cfg)
    rows = read_jsonl(out / "history.jsonl")
    # 8 lines per epoch, batches of 4, 2 batches per optimizer step: 1 step per epoch, 2 batches drawn each.
    assert [r["step"] for r in rows] == [0, 1, 2] and calls["n"] == 4
    assert [r["lines_seen"] for r in rows] == [0, 8, 16]
    assert all(r["select_cer"] is not None for r in rows)
    best = min(rows, key=lambda r: r["select_cer"])
    assert metrics["chosen_epoch"] == best["epoch"] and metrics["select_cer_greedy"] == best["select_cer"]
    chosen = CTCRecognizer.load(out / "checkpoints" / train_ctc.BEST).state_dict()
    saved = CTCRecognizer.load(out / "model").state_dict()
    assert all(torch.equal(chosen[k], saved[k]) for k in chosen)
    assert "select_cer" in metrics and metrics["steps"] == 2
