"""Bad command lines: exit code 2, one line on stderr, never a traceback (run in-process)."""

from __future__ import annotations

import pytest

import metabp
from metabp._cli import main
from metabp.search import Evaluation, Study, load_study

STUDY = """
where = "act2"
seeds = [0, 1]
[target]
preset = "gaussians-mlp3"
epochs = 2
[search]
sampler = "random"
n_initial = 2
n_trials = 2
"""


def _evaluate(gs, seeds, *, target=0, lr=None):
    return [Evaluation(aulc=1.0 if g is None else float(g.omega.abs().sum())) for g in gs]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "done.toml").write_text(STUDY)
    Study(load_study(d / "done.toml"), evaluate=_evaluate).optimize(progress=False)  # a finished study
    (d / "empty.toml").write_text(STUDY.replace('where = "act2"', 'name = "never-run"\nwhere = "act2"'))
    metabp.save(metabp.MetaNet(1, "tanh", seed=0), d / "g.bfn")
    (d / "binary.toml").write_bytes(b"\xff\xfe\x00seeds = [0]\n")
    (d / "bad-q.toml").write_text(STUDY + "q = 0\n")
    (d / "bad-device.toml").write_text(STUDY.replace('where = "act2"', 'device = "bogus"'))
    (d / "bad-hidden.toml").write_text(STUDY.replace("epochs = 2", 'hidden = "16"'))
    (d / "cuda.toml").write_text(STUDY.replace('where = "act2"', 'device = "cuda:7"'))
    (d / "dir-storage.toml").write_text(STUDY + 'storage = "."\n')
    (d / "not.bfn").write_text("this is not a b-function\n")
    g = metabp.MetaNet(1, "tanh", seed=0)
    metabp.save(g, d / "bad-where.bfn", meta={"target": "gaussians-mlp3", "where": "act9", "lr": 0.05})
    metabp.save(g, d / "bad-setting.bfn", meta={"target": "gaussians-mlp3", "overrides": {"epochs": 0}})
    return d


def cases(d):
    done, empty, bfn = str(d / "done.toml"), str(d / "empty.toml"), str(d / "g.bfn")
    return [
        [], ["bogus"], ["--bogus"], ["search"], ["search", str(d / "missing.toml")], ["search", bfn],
        ["show", bfn], ["export", bfn], ["validate", bfn], ["search", str(d)],
        ["search", str(d / "binary.toml")], ["search", done, "--trials", "x"],
        ["search", done, "--trials", "0"], ["search", done, "--trials", "-5"],
        ["search", done, "--max-new", "-1"], ["search", empty, "--resume"], ["search", done, "--bogus"],
        ["search", str(d / "bad-q.toml")], ["search", str(d / "bad-device.toml")],
        ["search", str(d / "bad-hidden.toml")], ["search", str(d / "cuda.toml")],
        ["search", str(d / "dir-storage.toml")], ["search", done, "--storage", ""],
        ["search", done, "--storage", str(d)], ["show", empty],
        ["show", done, "--storage", "sqlite:////no/such/dir/x.db"], ["show", done, "--storage", "bogus://x"],
        ["export", empty], ["export", done, "--trial", "999"], ["export", done, "--trial", "x"],
        ["export", done, "-o", "/proc/metabp/x.bfn"], ["export", done, "-o", str(d)],
        ["validate", done], ["validate", empty],
        ["train", "bogus-target"], ["train", "gaussians-mlp3", "--epochs", "0"],
        ["train", "gaussians-mlp3", "--lr", "-1"], ["train", "gaussians-mlp3", "--lr", "nan"],
        ["train", "gaussians-mlp3", "--lr", "1e300"],
        ["train", "gaussians-mlp3", "--bfn", str(d / "missing.bfn")],
        ["train", "gaussians-mlp3", "--bfn", str(d / "not.bfn")],
        ["train", "gaussians-mlp3", "--bfn", str(d)], ["train", "gaussians-mlp3", "--threads", "x"],
        ["train", "gaussians-mlp3", "--optimizer", "bogus"], ["train", "gaussians-mlp3", "--batch-size", "0"],
        ["train", "gaussians-mlp3", "--device", "cuda:7"], ["train", "gaussians-mlp3", "--device", "bogus"],
        ["train", "gaussians-mlp3", "--seed", "x"],
        ["train", "gaussians-mlp3", "--bfn", str(d / "bad-where.bfn"), "--no-progress"],
        ["train", "gaussians-mlp3", "--bfn", str(d / "bad-setting.bfn"), "--no-progress"],
        ["plot", "bogus", bfn], ["plot", "implicit-lr", str(d / "missing.bfn")],
        ["plot", "implicit-lr", str(d / "not.bfn")],
        ["plot", "implicit-lr", bfn, "--zmin", "5", "--zmax", "1"],
        ["compare", str(d / "missing.toml")], ["compare", empty], ["report", str(d / "missing.toml")],
    ]


N_CASES = 57


def test_enough_cases(files):
    assert len(cases(files)) == N_CASES >= 40


@pytest.mark.parametrize("i", range(N_CASES))
def test_bad_invocation_is_one_line_and_exit_2(files, capsys, i):
    argv = cases(files)[i]
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], (argv, err)


def test_messages_name_the_mistake(files, capsys):
    d = files
    for argv, text in [
        (["show", str(d / "g.bfn")], "not UTF-8 text"),
        (["export", str(d / "done.toml"), "-o", "/proc/metabp/x.bfn"], "/proc/metabp"),
        (["search", str(d / "cuda.toml")], "device = 'cuda:7'"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["validate", str(d / "done.toml")], "no held-out seeds"),
        (["train", "gaussians-mlp3", "--lr", "1e300"],
         "Invalid learning rate: 1e+300 (lr must be at most 1e+06)"),  # torch's kernels would overflow
        (["train", "gaussians-mlp3", "--bfn", str(d / "bad-where.bfn"), "--no-progress"],
         f"({d / 'bad-where.bfn'} was found at where='act9'; give --where)"),
        (["train", "gaussians-mlp3", "--bfn", str(d / "bad-setting.bfn"), "--no-progress"],
         f"epochs=0 must be an int in [1, 100000] (in the setting {d / 'bad-setting.bfn'} was found in, "
         "{'epochs': 0}; override it on the command line)"),
        (["train", "gaussians-mlp3", "--bfn", str(d / "bad-setting.bfn"), "--epochs", "-1"],
         "epochs=-1 must be an int in [1, 100000]\n"),  # the command line's mistake, named as such
    ]:
        assert main(argv) == 2
        assert text in capsys.readouterr().err


def test_help_is_for_users(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "search, train and analyse b-functions" in out and "sub-command" not in out


@pytest.mark.parametrize("command", ["show", "export", "validate", "report", "compare"])
def test_reading_a_study_never_run_leaves_no_file(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "new.toml").write_text(STUDY)
    assert main([command, "new.toml"]) == 2
    assert "run `metabp search new.toml` first" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["new.toml"]  # no empty journal beside it


@pytest.fixture(scope="module")
def per_site_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-per-site")
    g = metabp.MetaNet(1, "tanh", seed=0)
    metabp.save(metabp.PerSite({"act1": g, "act2": metabp.Scaled(2.0)}), d / "mixed.bfn",
                meta={"target": "gaussians-mlp3"})
    metabp.save(metabp.PerSite({"act1": g, "act2": g}), d / "sites.bfn", meta={"target": "gaussians-mlp3"})
    data = (d / "sites.bfn").read_bytes()
    (d / "corrupt.bfn").write_bytes(data[:-8] + bytes(8))
    return d


@pytest.mark.parametrize(("argv", "says"), [
    (["explain", "mixed.bfn"], "site 'act2' holds a scaled b-function"),
    (["explain", "corrupt.bfn"], "corrupt.bfn"),
    (["transfer", "sites.bfn", "--targets", "gaussians-mlp3", "--where", "act2"], "with a PerSite"),
])
def test_per_site_files_bad_invocations_are_one_line_and_exit_2(per_site_files, capsys, argv, says):
    argv = [str(per_site_files / a) if a.endswith(".bfn") else a for a in argv]
    code = main([*argv, "-o", str(per_site_files / "out")])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1 and says in err, err
