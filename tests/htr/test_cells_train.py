"""Training the cell reader end to end on a tiny set: weights file, calibration, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from htr.cells.model import CellNet, load_reader, save_reader
from htr.cells.train import fit_temperature, simulate_keys
from inkbase.errors import InputError


def test_weights_round_trip(tmp_path):
    model = CellNet(width=8)
    path = save_reader(tmp_path / "w.safetensors", model, {"temperature": 1.7, "verify_threshold": 0.9})
    loaded, meta = load_reader(path)
    assert meta["calibration"]["temperature"] == 1.7
    x = np.random.default_rng(0).random((2, 1, 32, 32)).astype(np.float32)
    import torch

    model.eval()
    with torch.no_grad():
        assert np.allclose(model(torch.from_numpy(x)).numpy(), loaded(torch.from_numpy(x)).numpy(), atol=0.05)


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.safetensors"):
        load_reader(tmp_path / "nope.safetensors")


def test_a_reader_without_its_calibration_is_refused(tmp_path):
    from htr.cells.reader import CellReader

    path = save_reader(tmp_path / "w.safetensors", CellNet(width=8), {"temperature": 1.7, "verify_threshold": 0.9})
    with pytest.raises(InputError, match=r"w\.safetensors: calibration\.accept_threshold: missing"):
        CellReader(path)


def test_a_reader_with_an_unknown_rule_is_refused(tmp_path):
    from htr.cells.reader import CellReader

    cal = {"temperature": 1.7, "verify_threshold": 0.9, "accept_threshold": 0.9, "rule": "mean"}
    path = save_reader(tmp_path / "w.safetensors", CellNet(width=8), cal)
    with pytest.raises(InputError, match=r"w\.safetensors: calibration\.rule: 'mean' is not one of verify, product"):
        CellReader(path)


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 4000)
    logits = rng.normal(0, 1, (4000, 5))
    logits[np.arange(4000), y] += 1.0
    assert fit_temperature(logits * 4, y) > 2.5  # logits scaled up 4x need a temperature near 4


def test_simulated_keys_mix_right_and_wrong():
    from htr.cells.data import CLASSES

    y = np.asarray([CLASSES.index("A")] * 1000)
    keys = simulate_keys(y, np.random.default_rng(0), 0.75)
    share = float((keys == y).mean())
    assert 0.7 < share < 0.8 and all(CLASSES[k].isalpha() for k in keys)


def _cfg(tmp_path, *extra):
    from inkbase.cli import compose

    return compose("train_cells", [f"out_dir={tmp_path / 'run'}", "data.n_train=200", "data.n_val=120",
                                   "trainer.epochs=2", "trainer.batch_size=64", "model.width=8",
                                   f"data.cache_dir={tmp_path / 'cache'}", *extra])


def test_missing_mnist_is_named(tmp_path):
    from htr.cells import train
    from inkbase.errors import ConfigError

    with pytest.raises(ConfigError, match="mnist"):
        train.run(_cfg(tmp_path, "data.mnist_dir=/nonexistent"))


@pytest.fixture
def pypi_val_fonts(monkeypatch):
    """Validation families from the PyPI fonts, so the tiny runs need no font cache."""
    monkeypatch.setattr("htr.cells.data.VAL_FAMILIES", frozenset({"kalam", "delius"}))


def test_train_tiny_run_and_resume(tmp_path, capsys, pypi_val_fonts):
    from htr.cells import train

    train.run(_cfg(tmp_path, "data.mnist_share=0"))
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    cal = metrics["calibration"]
    assert cal["temperature"] > 0 and cal["n_val"] == 120
    _, meta = load_reader(run / "cells.safetensors")
    assert meta["calibration"]["accept_threshold"] == cal["accept_threshold"]
    # Cut short after training: the rerun resumes from the checkpoint instead of training again.
    (run / "metrics.json").unlink()
    capsys.readouterr()
    train.run(_cfg(tmp_path, "data.mnist_share=0"))
    assert "epoch 1" not in capsys.readouterr().err
    assert [e["epoch"] for e in json.loads((run / "metrics.json").read_text())["epochs"]] == [1, 2]


def test_zero_epochs_calibrates_a_finished_reader(tmp_path, pypi_val_fonts):
    from htr.cells import train

    train.run(_cfg(tmp_path, "data.mnist_share=0"))
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())["calibration"]
    again = train.run(_cfg(tmp_path, "data.mnist_share=0", f"out_dir={tmp_path / 'cal'}", "trainer.epochs=0",
                           f"trainer.init_weights={tmp_path / 'run' / 'cells.safetensors'}"))
    assert again["epochs"] == [] and again["n_train"] == 0
    # The same network on the same validation cells: the same calibration (up to fp16 weights).
    assert again["calibration"]["val_accuracy"] == pytest.approx(trained["val_accuracy"], abs=0.02)


def test_pairing_ships_both_networks_calibrated_together(tmp_path, pypi_val_fonts):
    from htr.cells import train
    from htr.cells.model import CellGapNet, load_networks
    from htr.cells.reader import CellReader

    train.run(_cfg(tmp_path, "data.mnist_share=0"))
    first = tmp_path / "run" / "cells.safetensors"
    metrics = train.run(_cfg(tmp_path, "data.mnist_share=0", f"out_dir={tmp_path / 'pair'}", "model.arch=gapnet",
                             "seed=2", f"pair.with={first}"))
    nets, meta = load_networks(tmp_path / "pair" / "cells.safetensors")
    assert len(nets) == 2 and sum(isinstance(n, CellGapNet) for n in nets) == 1
    cal = meta["calibration"]
    assert cal["temperature2"] > 0 and cal == metrics["calibration"]
    # Pass 2 (the single-pass reading) is the network more accurate on the validation cells.
    acc = (metrics["this_network"]["val_accuracy"], metrics["other_network"]["val_accuracy"])
    assert metrics["pass2_is_this_network"] == (acc[0] >= acc[1])
    reader = CellReader(tmp_path / "pair" / "cells.safetensors")
    x = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    p1, p2 = reader.pass_probs_from_inputs(x)
    assert p1.shape == p2.shape == (3, 38) and not np.allclose(p1, p2)
    assert np.allclose(reader.probs([np.full((40, 40), 200, np.uint8)]).sum(), 1, atol=1e-4)
