"""Training the cell reader end to end on a tiny set: weights file, calibration, resume."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from htr.cells.model import CellNet, load_reader, save_reader
from htr.cells.train import fit_temperature, simulate_keys
from inkbase.errors import ConfigError, InputError

ONCE = {"shift": 0, "positions": 5, "zooms": ()}  # the views of reading each cell once


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


def test_a_digit_network_without_its_calibration_is_refused(tmp_path):
    from htr.cells.model import CellGapNet
    from htr.cells.reader import CellReader

    cal = {"temperature": 1.0, "temperature2": 1.0, "verify_threshold": 0.6, "accept_threshold": 0.98, "rule": "product"}
    path = save_reader(tmp_path / "w.safetensors", CellGapNet(width=8), cal, CellNet(width=8), CellNet(width=8))
    with pytest.raises(InputError, match=r"w\.safetensors: calibration\.digits: missing"):
        CellReader(path)
    digits = {**cal, "verify_threshold": 0.5, "accept_threshold": 0.9}
    path = save_reader(tmp_path / "w.safetensors", CellGapNet(width=8), {**cal, "digits": digits}, CellNet(width=8),
                       CellNet(width=8))
    reader = CellReader(path)
    assert reader.rule_for("0123456789").accept_threshold == 0.9 and reader.rule_for("ABC").accept_threshold == 0.98
    assert reader.rule_for("A1").accept_threshold == 0.98  # a mixed alphabet reads with the general rule


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


def test_simulated_keys_of_digit_cells_are_digits():
    from htr.cells.data import CLASSES, CROSSED, EMPTY

    y = np.asarray([CLASSES.index("7")] * 50 + [CLASSES.index(EMPTY)] * 50 + [CLASSES.index(CROSSED)] * 50)
    keys = simulate_keys(y, np.random.default_rng(0), 0.75)
    assert all(CLASSES[k].isdigit() for k in keys)
    # With letters among the cells, empty and crossed cells sit in letter tables as before.
    mixed = simulate_keys(np.concatenate([y, [CLASSES.index("B")]]), np.random.default_rng(0), 0.75)
    assert all(CLASSES[k].isalpha() for k in mixed[50:150])


def test_digit_specialist_joins_a_pair(tmp_path, pypi_val_fonts):
    import torch

    from htr.cells import train
    from htr.cells.model import load_networks
    from htr.cells.reader import AcceptRule, CellReader

    train.run(_cfg(tmp_path, "data.mnist_share=0"))
    train.run(_cfg(tmp_path, "data.mnist_share=0", f"out_dir={tmp_path / 'pair'}", "model.arch=gapnet", "seed=2",
                   f"pair.with={tmp_path / 'run' / 'cells.safetensors'}"))
    pair = tmp_path / "pair" / "cells.safetensors"
    digit_cfg = ("data.mnist_share=0", "data.digit_share=1.0", f"out_dir={tmp_path / 'digits'}", f"digits.into={pair}")
    metrics = train.run(_cfg(tmp_path, *digit_cfg, "data.warp_prob=0.5"))
    # warp_prob changes the training cells only: the digit validation cells are one cached file for both.
    train.run(_cfg(tmp_path, *digit_cfg, f"out_dir={tmp_path / 'digits0'}", "trainer.epochs=0",
                   f"trainer.init_weights={tmp_path / 'run' / 'cells.safetensors'}"))
    assert len(list((tmp_path / "cache").glob("cells_val_*.npz"))) == 2  # mixed and digit-only validation cells
    assert len(list((tmp_path / "cache").glob("cells_train_*.npz"))) == 3  # mixed (seeds 0 and 2), warped digits

    nets, meta = load_networks(tmp_path / "digits" / "cells.safetensors")
    pair_nets, pair_meta = load_networks(pair)
    assert len(nets) == 3 and meta["has_digits"] and not pair_meta["has_digits"]
    d = metrics["digits"]
    # The pair as shipped is measured with its own calibration, untouched.
    assert d["as_shipped"]["verify_threshold"] == pair_meta["calibration"]["verify_threshold"]
    assert d["as_shipped"]["n_val"] == d["specialist"]["n_val"] == 120
    general = {k: v for k, v in meta["calibration"].items() if k != "digits"}
    assert general == pair_meta["calibration"]  # letter tables read exactly as before
    reader = CellReader(tmp_path / "digits" / "cells.safetensors")
    spec = d["specialist"]
    assert reader.rule_for("0123456789") == AcceptRule(spec["rule"], spec["verify_threshold"], spec["accept_threshold"])
    assert reader.rule_for("ABCDEFGH") == reader.rule
    x = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    p1, p2 = reader.pass_probs_from_inputs(x, alphabet="0123456789")
    with torch.no_grad():
        logits = nets[2](torch.from_numpy(x)[:, None]).numpy()
    assert np.allclose(p2, train.softmax(logits / spec["temperature2"]), atol=1e-5)
    g1, g2 = reader.pass_probs_from_inputs(x, alphabet="ABC")
    assert np.allclose(g1, CellReader(pair).pass_probs_from_inputs(x)[0], atol=1e-6)
    assert not np.allclose(p2, g2)
    # The recalibrated file: the pair's own networks with digit-table thresholds.
    recal = CellReader(tmp_path / "digits" / "cells_recalibrated.safetensors")
    assert recal.model_digits is None and recal.digits["accept_threshold"] == d["recalibrated"]["accept_threshold"]
    r1, r2 = recal.pass_probs_from_inputs(x, alphabet="0123456789")
    with torch.no_grad():
        logits2 = pair_nets[1](torch.from_numpy(x)[:, None]).numpy()
    assert np.allclose(r2, train.softmax(logits2 / d["recalibrated"]["temperature2"]), atol=1e-5)


def test_digit_specialist_needs_a_two_network_reader(tmp_path, pypi_val_fonts):
    from htr.cells import train
    from inkbase.errors import ConfigError

    train.run(_cfg(tmp_path, "data.mnist_share=0"))
    with pytest.raises(ConfigError, match="digits.into.*holds one network"):
        train.run(_cfg(tmp_path, "data.mnist_share=0", "data.digit_share=1.0", f"out_dir={tmp_path / 'd'}",
                       f"digits.into={tmp_path / 'run' / 'cells.safetensors'}"))


def test_digit_pass1_joins_a_reader_with_a_specialist(tmp_path, pypi_val_fonts):
    import torch

    from htr.cells import train
    from htr.cells.model import CellGapNet, load_networks
    from htr.cells.reader import AcceptRule, CellReader
    from inkbase.errors import ConfigError

    train.run(_cfg(tmp_path, "data.mnist_share=0"))
    train.run(_cfg(tmp_path, "data.mnist_share=0", f"out_dir={tmp_path / 'pair'}", "model.arch=gapnet", "seed=2",
                   f"pair.with={tmp_path / 'run' / 'cells.safetensors'}"))
    pair = tmp_path / "pair" / "cells.safetensors"
    digit = ("data.mnist_share=0", "data.digit_share=1.0")
    with pytest.raises(ConfigError, match="digits.into.*no digit specialist"):
        train.run(_cfg(tmp_path, *digit, f"out_dir={tmp_path / 'bad'}", f"digits.into={pair}", "digits.role=pass1"))
    train.run(_cfg(tmp_path, *digit, f"out_dir={tmp_path / 'spec'}", f"digits.into={pair}"))
    spec_file = tmp_path / "spec" / "cells.safetensors"
    metrics = train.run(_cfg(tmp_path, *digit, f"out_dir={tmp_path / 'p1'}", "model.arch=gapnet", "seed=3",
                             "data.warp_prob=0.7", f"digits.into={spec_file}", "digits.role=pass1"))
    nets, meta = load_networks(tmp_path / "p1" / "cells.safetensors")
    spec_nets, spec_meta = load_networks(spec_file)
    assert len(nets) == 4 and meta["has_digits_pass1"] and not spec_meta["has_digits_pass1"]
    assert isinstance(nets[3], CellGapNet)
    d = metrics["digits"]
    # The file's digit path as shipped keeps its calibration; recalibrating it by the same procedure on the
    # same cells gives the same thresholds.
    shipped = spec_meta["calibration"]["digits"]
    assert d["as_shipped"]["verify_threshold"] == shipped["verify_threshold"]
    assert d["recalibrated"]["accept_threshold"] == shipped["accept_threshold"]
    assert {k: v for k, v in meta["calibration"].items() if k != "digits"} == \
        {k: v for k, v in spec_meta["calibration"].items() if k != "digits"}
    reader, before = CellReader(tmp_path / "p1" / "cells.safetensors"), CellReader(spec_file)
    new = d["pass1"]
    assert reader.rule_for("0123456789") == AcceptRule(new["rule"], new["verify_threshold"], new["accept_threshold"])
    x = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    p1, p2 = reader.pass_probs_from_inputs(x, alphabet="0123456789")
    with torch.no_grad():
        logits1 = nets[3](torch.from_numpy(x)[:, None]).numpy()
        logits2 = spec_nets[2](torch.from_numpy(x)[:, None]).numpy()
    assert np.allclose(p1, train.softmax(logits1 / new["temperature"]), atol=1e-5)
    assert np.allclose(p2, train.softmax(logits2 / new["temperature2"]), atol=1e-5)
    # Letter tables read exactly as before.
    for a, b in zip(reader.pass_probs_from_inputs(x, alphabet="ABC"), before.pass_probs_from_inputs(x, alphabet="ABC"),
                    strict=True):
        assert np.allclose(a, b, atol=1e-6)
    with pytest.raises(ConfigError, match="already holds a digit pass 1"):
        train.run(_cfg(tmp_path, *digit, f"out_dir={tmp_path / 'again'}", "trainer.epochs=0",
                       f"trainer.init_weights={tmp_path / 'run' / 'cells.safetensors'}",
                       f"digits.into={tmp_path / 'p1' / 'cells.safetensors'}", "digits.role=pass1"))

    # pass1_mix=mean: pass 1 of digit tables averages the general pass 1 and the digit pass 1.
    mean = train.run(_cfg(tmp_path, *digit, f"out_dir={tmp_path / 'mean'}", "model.arch=gapnet", "seed=3",
                          "data.warp_prob=0.7", f"digits.into={spec_file}", "digits.role=pass1",
                          "digits.pass1_mix=mean"))["digits"]["pass1"]
    assert mean["pass1_mix"] == "mean" and mean["temperature"] == d["recalibrated"]["temperature"]
    mixed = CellReader(tmp_path / "mean" / "cells.safetensors")
    assert mixed.digits["temperature_digits_pass1"] == mean["temperature_digits_pass1"]
    m1, m2 = mixed.pass_probs_from_inputs(x, alphabet="0123456789")
    mean_nets = load_networks(tmp_path / "mean" / "cells.safetensors")[0]
    with torch.no_grad():
        general, own = (mean_nets[i](torch.from_numpy(x)[:, None]).numpy() for i in (0, 3))
    expected = (train.softmax(general / mean["temperature"]) + train.softmax(own / mean["temperature_digits_pass1"])) / 2
    assert np.allclose(m1, expected, atol=1e-5) and np.allclose(m2, train.softmax(logits2 / mean["temperature2"]), atol=1e-5)


def test_a_digit_pass1_needs_a_specialist_in_the_file(tmp_path):
    from htr.cells.model import CellGapNet, CellNet, save_reader

    with pytest.raises(ValueError, match="digit specialist"):
        save_reader(tmp_path / "x.safetensors", CellGapNet(width=4), {}, CellNet(width=4), None, CellGapNet(width=4))


def test_a_mean_pass1_mix_needs_its_temperature(tmp_path):
    from htr.cells.model import CellGapNet, CellNet, save_reader
    from htr.cells.reader import CellReader
    from inkbase.errors import InputError

    cal = {"rule": "product", "temperature": 1.0, "temperature2": 1.0, "verify_threshold": 0.6, "accept_threshold": 0.98}
    nets = (CellGapNet(width=4), CellNet(width=4), CellNet(width=4), CellGapNet(width=4))
    path = save_reader(tmp_path / "x.safetensors", nets[0], {**cal, "digits": {**cal, "pass1_mix": "mean"}}, *nets[1:])
    with pytest.raises(InputError, match="pass1_mix"):
        CellReader(path)
    path = save_reader(tmp_path / "y.safetensors", nets[0], {**cal, "digits": {**cal, "pass1_mix": "max"}}, *nets[1:])
    with pytest.raises(InputError, match="'max' is not one of"):
        CellReader(path)


def test_a_shift_in_the_calibration_reads_each_cell_at_five_positions(tmp_path):
    import torch

    from htr.cells.reader import CellReader, shifted_views
    from htr.cells.train import logits_of, softmax

    torch.manual_seed(0)
    net = CellNet(width=4).eval()
    with torch.no_grad():  # larger weights: peaked outputs, so that the positions' differences show
        for p in net.parameters():
            p.mul_(2.0)
    cal = {"rule": "product", "temperature": 0.8, "verify_threshold": 0.9, "accept_threshold": 0.95}
    x = (np.random.default_rng(0).random((3, 32, 32)) > 0.8).astype(np.uint8) * 255
    plain = CellReader(save_reader(tmp_path / "a.safetensors", net, cal))
    shifted = CellReader(save_reader(tmp_path / "b.safetensors", net, {**cal, "shift": 1}))
    views = shifted_views(x, 1)
    assert len(views) == 5 and all(v.shape == x.shape for v in views)
    assert (views[1][:, :, :-1] == x[:, :, 1:]).all() and (views[1][:, :, -1] == 0).all()  # moved left by 1 px
    # Calibration-time logits and read-time probabilities agree, and differ from reading the crop once.
    expected = softmax(np.mean([logits_of(net, v) for v in views], axis=0) / 0.8)
    np.testing.assert_allclose(logits_of(net, x, shift=1), np.mean([logits_of(net, v) for v in views], axis=0),
                               atol=1e-5)
    got = shifted.probs_from_inputs(x.astype(np.float32) / 255.0)
    np.testing.assert_allclose(got, expected, atol=1e-3)  # the file's fp16 weights
    assert np.abs(got - plain.probs_from_inputs(x.astype(np.float32) / 255.0)).max() > 0.05
    with pytest.raises(InputError, match="calibration.shift"):
        CellReader(save_reader(tmp_path / "c.safetensors", net, {**cal, "shift": -1}))


def test_nine_positions_and_zooms_are_read_as_the_calibration_says(tmp_path):
    import torch

    from htr.cells.reader import CellReader, shifted_views, zoomed
    from htr.cells.train import logits_of

    x = np.zeros((2, 32, 32), np.float32)
    x[:, 12:20, 14:18] = 1.0  # an upright bar in the middle
    assert len(shifted_views(x, 1, 9)) == 9
    assert (shifted_views(x, 1, 9)[5][:, :-1, :-1] == x[:, 1:, 1:]).all()  # moved left and up by 1 px
    np.testing.assert_allclose(zoomed(x, 1.0), x, atol=1e-6)
    big, small = zoomed(x, 1.25), zoomed(x, 0.75)
    assert big.sum() > x.sum() * 1.3 and small.sum() < x.sum() * 0.7  # ink area grows / shrinks ~ factor^2
    rows = np.flatnonzero(big[0].max(1) > 0.5)
    assert rows.min() < 12 and rows.max() > 19 and abs((rows.min() + rows.max()) / 2 - 15.5) <= 0.5  # about the centre
    torch.manual_seed(0)
    net = CellNet(width=4).eval()
    cal = {"rule": "product", "temperature": 1.0, "verify_threshold": 0.9, "accept_threshold": 0.95, "shift": 1}
    reader = CellReader(save_reader(tmp_path / "v.safetensors", net, {**cal, "positions": 9, "zooms": [1.1, 0.9]}))
    assert reader.views == {"shift": 1, "positions": 9, "zooms": (1.1, 0.9)}
    views = shifted_views(x, 1, 9) + [zoomed(x, 1.1), zoomed(x, 0.9)]
    expected = np.mean([logits_of(net, (v * 255).astype(np.uint8)) for v in views], axis=0)
    np.testing.assert_allclose(logits_of(net, (x * 255).astype(np.uint8), shift=1, positions=9, zooms=(1.1, 0.9)),
                               expected, atol=1e-3)
    got = reader.probs_from_inputs(x)
    np.testing.assert_allclose(got, torch.softmax(torch.from_numpy(expected), 1).numpy(), atol=2e-3)
    for bad, field in (({"positions": 7}, "calibration.positions"), ({"zooms": [3.0]}, "calibration.zooms"),
                       ({"zooms": 1.1}, "calibration.zooms")):
        with pytest.raises(InputError, match=field):
            CellReader(save_reader(tmp_path / "bad.safetensors", net, {**cal, **bad}))


def test_a_digit_shift_applies_to_digit_tables_only(tmp_path):
    from htr.cells.model import CellGapNet
    from htr.cells.reader import CellReader

    cal = {"rule": "product", "temperature": 1.0, "temperature2": 1.0, "verify_threshold": 0.6, "accept_threshold": 0.98}
    import torch

    torch.manual_seed(0)
    nets = (CellGapNet(width=4), CellNet(width=4), CellNet(width=4))
    with torch.no_grad():  # peaked outputs, so that reading at one or five positions differs
        for p in nets[2].parameters():
            p.mul_(2.0)
    reader = CellReader(save_reader(tmp_path / "d.safetensors", nets[0], {**cal, "digits": {**cal, "shift": 1}}, *nets[1:]))
    assert (reader.shift, reader.digit_shift) == (0, 1)
    x = (np.random.default_rng(1).random((2, 32, 32)) > 0.8).astype(np.float32)
    _, digits = reader.pass_probs_from_inputs(x, alphabet="0123456789")
    _, letters = reader.pass_probs_from_inputs(x, alphabet="ABCD")
    one, five = ONCE, {**ONCE, "shift": 1}
    np.testing.assert_allclose(digits, reader._softmax(nets[2].eval(), 1.0, x, 512, five), atol=1e-3)
    assert np.abs(digits - reader._softmax(nets[2], 1.0, x, 512, one)).max() > 0.05
    np.testing.assert_allclose(letters, reader._softmax(nets[1].eval(), 1.0, x, 512, one), atol=1e-3)
    with pytest.raises(InputError, match="calibration.digits.shift"):
        CellReader(save_reader(tmp_path / "e.safetensors", nets[0], {**cal, "digits": {**cal, "shift": "1"}}, *nets[1:]))


def test_chunked_rendering_gives_the_same_cells_for_any_number_of_workers(tmp_path, pypi_val_fonts):
    from htr.cells import train
    from htr.cells.data import cell_fonts

    cfg = _cfg(tmp_path, "data.mnist_share=0", "data.render_chunks=3")
    fonts = cell_fonts("val")
    kwargs = dict(mnist=None, mnist_share=0.0, empty_share=0.06, crossed_share=0.06, digit_share=0.4,
                  lowres_prob=0.3, thickness_prob=0.3, warp_prob=0.0)
    one = train._render_chunks(fonts, 10, 5, 3, 1, kwargs)
    two = train._render_chunks(fonts, 10, 5, 3, 2, kwargs)
    assert one[0].shape == (10, 32, 32) and np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    # Another seed draws other cells; the parts are not copies of one another.
    assert not np.array_equal(one[0], train._render_chunks(fonts, 10, 6, 3, 1, kwargs)[0])
    assert not np.array_equal(one[0][:3], one[0][4:7])
    # Chunked cells are cached under their own key; the worker count is not part of it.
    x1, _, _ = train._data("val", "val", 12, None, cfg, 1)
    cfg.data.workers = 2
    x2, _, _ = train._data("val", "val", 12, None, cfg, 1)
    assert np.array_equal(x1, x2) and len(list((tmp_path / "cache").glob("cells_val_*.npz"))) == 1
    with pytest.raises(ConfigError, match="render_chunks"):
        train._render_chunks(fonts, 10, 5, 0, 1, kwargs)
    with pytest.raises(ConfigError, match="data.workers"):
        train._render_chunks(fonts, 10, 5, 3, 0, kwargs)


def test_the_cache_key_of_one_stream_is_unchanged_by_the_chunk_options(tmp_path, pypi_val_fonts):
    """Cells rendered as one stream (every shipped reader's) keep the key they had before the chunk and
    worker options existed, so committed runs find their cached cells."""
    from htr.cells import train

    cfg = _cfg(tmp_path, "data.mnist_share=0")
    train._data("val", "val", 6, None, cfg, 1)
    (path,) = (tmp_path / "cache").glob("cells_val_*.npz")
    data = OmegaConf.to_container(cfg.data, resolve=True)
    for key in ("warp_prob", "render_chunks", "workers"):
        data.pop(key)
    spec = json.dumps({"name": "val", "n": 6, "seed": 1, "data": data}, sort_keys=True)
    assert path.name == f"cells_val_{hashlib.sha1(spec.encode()).hexdigest()[:12]}.npz"


def test_a_device_that_is_not_there_is_refused(tmp_path, pypi_val_fonts):
    from htr.cells import train

    with pytest.raises(ConfigError, match="trainer.device"):
        train.run(_cfg(tmp_path, "data.mnist_share=0", "trainer.device=nonsense"))


def test_a_digit_mix_network_replaces_pass_1_in_the_digit_mean_only(tmp_path):
    """A file whose general pass 1 was replaced keeps the earlier one for the digit tables' mean."""
    import torch

    from htr.cells.model import CellGapNet, load_networks
    from htr.cells.reader import CellReader

    torch.manual_seed(0)
    general1, general2, spec, digit1, old1 = (CellGapNet(width=4), CellNet(width=4), CellNet(width=4),
                                              CellGapNet(width=4), CellGapNet(width=4))
    with torch.no_grad():  # the two pass-1 networks disagree clearly
        for p in old1.parameters():
            p.mul_(3.0)
    cal = {"rule": "product", "temperature": 1.0, "temperature2": 1.0, "verify_threshold": 0.6, "accept_threshold": 0.98}
    digits = {**cal, "pass1_mix": "mean", "temperature_digits_pass1": 1.0}
    path = save_reader(tmp_path / "m.safetensors", general1, {**cal, "digits": digits}, general2, spec, digit1, old1)
    nets, meta = load_networks(path)
    assert len(nets) == 5 and meta["has_digits_mix"]
    reader = CellReader(path)
    x = (np.random.default_rng(2).random((3, 32, 32)) > 0.8).astype(np.float32)
    p1, _ = reader.pass_probs_from_inputs(x, alphabet="0123456789")
    want = (reader._softmax(old1.eval(), 1.0, x, 512, ONCE) + reader._softmax(digit1.eval(), 1.0, x, 512, ONCE)) / 2
    np.testing.assert_allclose(p1, want, atol=1e-3)
    with_general = (reader._softmax(general1.eval(), 1.0, x, 512, ONCE) + reader._softmax(digit1, 1.0, x, 512, ONCE)) / 2
    assert np.abs(p1 - with_general).max() > 0.01
    letters, _ = reader.pass_probs_from_inputs(x, alphabet="ABC")
    np.testing.assert_allclose(letters, reader._softmax(general1, 1.0, x, 512, ONCE), atol=1e-3)
    # Without a digit pass 1 there is no mean for it to join; without the mean it would be unused.
    with pytest.raises(ValueError, match="digit mix"):
        save_reader(tmp_path / "n.safetensors", general1, cal, general2, spec, None, old1)
    with pytest.raises(InputError, match="pass1_mix"):
        CellReader(save_reader(tmp_path / "o.safetensors", general1,
                               {**cal, "digits": {**digits, "pass1_mix": "none"}}, general2, spec, digit1, old1))


def test_the_threshold_grid_is_configurable_and_checked(tmp_path):
    from htr.cells import train

    rng = np.random.default_rng(0)
    y = rng.integers(0, 36, 300)
    logits = rng.normal(0, 1, (300, 38))
    logits[np.arange(300), y] += 4.0
    cfg = _cfg(tmp_path, "calibration.key_draws=1", "calibration.grid=[0.25]")
    cal = train.calibrate(logits, y, cfg, logits + rng.normal(0, 0.5, logits.shape))
    assert (cal["verify_threshold"], cal["accept_threshold"]) == (0.25, 0.25)
    cfg.calibration.grid = None  # the default grid
    assert train.calibrate(logits, y, cfg)["verify_threshold"] in train.THRESHOLD_GRID
    cfg.calibration.grid = [0.5, 1.5]
    with pytest.raises(ConfigError, match="calibration.grid"):
        train.calibrate(logits, y, cfg)
