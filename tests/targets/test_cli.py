import json

import pytest

import metabp
from metabp._cli import main


def test_train_prints_aulc_beside_backprop_on_the_same_seed(capsys, tmp_path):
    from metabp.targets import get_target, train

    path = tmp_path / "g.bfn"
    metabp.save(metabp.Scaled(0.5), path)
    rc = main(["train", "gaussians-mlp3", "--bfn", str(path), "--where", "act2", "--epochs", "4",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "gaussians-mlp3 (b-function" in out and "at act2" in out and "test accuracy " in out
    spec = get_target("gaussians-mlp3", epochs=4)
    g, bp = train(spec, metabp.Scaled(0.5), seed=0).aulc, train(spec, seed=0).aulc
    assert f"AULC {g:.6g}   (backprop, same seed and lr: {bp:.6g}; g/backprop {g / bp:.3f}, " in out
    assert "adam lr 0.1 (the preset's)" in out  # a .bfn without provenance: the preset's lr


FOUND = {"study": "q", "target": "gaussians-mlp3", "overrides": {"epochs": 3}, "lr": 0.0462, "where": "act1"}


@pytest.fixture
def found_bfn(tmp_path):
    """A .bfn as ``metabp export`` writes it: found on gaussians-mlp3 at lr 0.0462, act1, 3 epochs."""
    path = tmp_path / "found.bfn"
    metabp.save(metabp.MetaNet(omega=[1.0, 0.0, 0.5, 0.2]), path, meta=FOUND)
    return path


def _train_json(capsys, argv):
    assert main(["train", *argv, "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def test_train_uses_the_setting_the_bfn_was_found_in_and_says_so(capsys, found_bfn):
    from metabp.targets import get_target, train

    got = _train_json(capsys, ["gaussians-mlp3", "--bfn", str(found_bfn)])
    spec = get_target("gaussians-mlp3", epochs=3, lr=0.0462)
    g = metabp.load(found_bfn)
    assert (got["lr"], got["where"]) == (0.0462, "act1")
    assert got["aulc"] == train(spec, g, "act1", seed=0).aulc
    assert got["backprop_aulc"] == train(spec, None, None, seed=0).aulc  # backprop at the same lr
    assert main(["train", "gaussians-mlp3", "--bfn", str(found_bfn), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "at act1, seed 0): 3 steps" in out
    assert f"adam lr 0.0462 (the lr {found_bfn} was found with)" in out


@pytest.mark.parametrize("extra, lr, where, source", [
    (["--lr", "0.2", "--where", "act2"], 0.2, "act2", "(--lr)"),
    (["--optimizer", "sgd"], 0.1, "act1", "(the preset's)"),  # 0.0462 was found for adam, not sgd
    (["--optimizer", "adam"], 0.0462, "act1", "(the lr"),
])
def test_the_command_line_wins_over_the_bfn(capsys, found_bfn, extra, lr, where, source):
    got = _train_json(capsys, ["gaussians-mlp3", "--bfn", str(found_bfn), "--epochs", "1", *extra])
    assert (got["lr"], got["where"]) == (lr, where)
    assert main(["train", "gaussians-mlp3", "--bfn", str(found_bfn), "--epochs", "1", "--no-progress",
                 *extra]) == 0
    assert f"lr {lr:.4g} {source}" in capsys.readouterr().out


def test_a_bfn_found_on_another_target_trains_at_the_presets_setting(capsys, found_bfn):
    from metabp.targets import get_target

    got = _train_json(capsys, ["digits-mlp", "--bfn", str(found_bfn), "--epochs", "1"])
    spec = get_target("digits-mlp")
    assert (got["lr"], got["where"]) == (spec.lr, spec.where)
    assert main(["train", "digits-mlp", "--bfn", str(found_bfn), "--epochs", "1", "--no-progress"]) == 0
    assert f"(the preset's; {found_bfn} was found on gaussians-mlp3)" in capsys.readouterr().out


def test_train_json_matches_the_api(capsys):
    from metabp.targets import get_target, train

    assert main(["train", "digits-mlp", "--epochs", "1", "--optimizer", "sgd", "--lr", "0.2", "--json",
                 "--no-progress", "--seed", "2"]) == 0
    got = json.loads(capsys.readouterr().out)
    run = train(get_target("digits-mlp", epochs=1, optimizer="sgd", lr=0.2), seed=2)
    assert got["step_losses"] == run.step_losses and got["aulc"] == run.aulc
    assert got["backprop_aulc"] is None


def test_a_diverged_run_is_labelled(capsys, tmp_path):
    path = tmp_path / "big.bfn"
    metabp.save(metabp.Scaled(1e4), path)
    assert main(["train", "gaussians-mlp3", "--bfn", str(path), "--optimizer", "sgd", "--lr", "0.5",
                 "--epochs", "20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "diverged at step" in out and "(diverged: penalty)" in out and "g diverged" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "no-such-target"], "metabp train: error: target='no-such-target' is not known"),
    (["train", "gaussians-mlp3", "--device", "bogus"], "device='bogus' is not a device; available here: cpu"),
    (["train", "gaussians-mlp3", "--bfn", "missing.bfn"], "missing.bfn"),
    (["train", "gaussians-mlp3", "--threads", "many"], "--threads='many' must be 'auto' or a number"),
    (["train", "gaussians-mlp3", "--epochs", "0"], "epochs=0 must be an int in [1, 100000]"),
    (["train", "mnist-mlp", "--data-dir", "{tmp}"], "--data-dir DIR"),
])
def test_user_mistakes_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METABP_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr("metabp.targets._data_idx._debian_dir", lambda: None)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--no-progress"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_a_per_site_bfn_trains_at_its_sites_in_the_setting_it_was_found_in(capsys, tmp_path):
    from metabp.targets import get_target, train

    g = metabp.PerSite({"act1": metabp.Scaled(0.5), "act2": metabp.MetaNet(omega=[1.0, 0.0, 0.5, 0.2])})
    path = metabp.save(g, tmp_path / "sites.bfn", meta={**FOUND, "where": None})
    got = _train_json(capsys, ["gaussians-mlp3", "--bfn", str(path)])
    run = train(get_target("gaussians-mlp3", epochs=3, lr=0.0462), g, seed=0)
    assert got["step_losses"] == run.step_losses and got["where"] == ["act1", "act2"]
    assert main(["train", "gaussians-mlp3", "--bfn", str(path), "--epochs", "1", "--no-progress"]) == 0
    assert "b-function" in capsys.readouterr().out.splitlines()[0]
    assert main(["train", "gaussians-mlp3", "--bfn", str(path), "--where", "act2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds one g per site (act1, act2); leave --where out" in err
