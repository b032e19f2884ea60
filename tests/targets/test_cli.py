import json

import metabp
from metabp._cli import main


def test_train_prints_aulc_and_accuracy(capsys, tmp_path):
    path = tmp_path / "g.bfn"
    metabp.save(metabp.Scaled(0.5), path)
    rc = main(["train", "gaussians-mlp3", "--bfn", str(path), "--where", "act2", "--epochs", "4",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "gaussians-mlp3 (b-function" in out and "at act2" in out
    assert "AULC " in out and "test accuracy " in out


def test_train_json_matches_the_api(capsys):
    from metabp.targets import get_target, train

    assert main(["train", "digits-mlp", "--epochs", "1", "--optimizer", "sgd", "--lr", "0.2", "--json",
                 "--no-progress", "--seed", "2"]) == 0
    got = json.loads(capsys.readouterr().out)
    run = train(get_target("digits-mlp", epochs=1, optimizer="sgd", lr=0.2), seed=2)
    assert got["step_losses"] == run.step_losses and got["aulc"] == run.aulc


def test_train_errors_are_one_line(capsys, tmp_path):
    assert main(["train", "no-such-target", "--no-progress"]) == 2
    assert "metabp train: error: target='no-such-target' is not known" in capsys.readouterr().err
    assert main(["train", "mnist-mlp", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    assert "--data-dir DIR" in capsys.readouterr().err
