"""The command line under hostile use (issue 9): Ctrl-C, outputs that cannot be written,
requests too large for memory, closed pipes, diverging runs, odd files and flags.

Each case asserts the exit status, that stderr is exactly one line with the key words,
and what is (or is not) on disk. Most run in-process through ``cli.main``; a subprocess
only where a real process is the point (SIGINT, a closed pipe, warnings on stderr).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

import xpnet as xn
from xpnet import cli
from xpnet.backend import memory
from xpnet.data import datasets

# the module, not the function of that name that xpnet.cli exports
cli_main = importlib.import_module("xpnet.cli.main")

SMALL = ["--epochs", "1", "--layers", "4"]


def one_line(capsys, *needles) -> str:
    """The single stderr line, checked for ``needles``; stdout is returned."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return captured.out


def spawn(*args, **kwargs):
    env = dict(os.environ, XPNET_BACKEND="numpy", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(),
                                                        os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "xpnet", *args], env=env, text=True,
                            **kwargs)


def host_params(path) -> dict:
    model = xn.load(str(path))
    return {k: model.backend.to_numpy(v) for k, v in model.params.items()}


# --------------------------------------------------------------------------- family 3: Ctrl-C


def interrupt_at_step(monkeypatch, step: int) -> None:
    """Raise KeyboardInterrupt from Adam's ``step``-th update (counted from 1), whichever
    update path the backend takes (per parameter, or all at once on flat buffers)."""
    calls = []
    for method in ("step", "step_flat"):
        real = getattr(xn.Adam, method)

        def then_maybe_interrupt(self, *args, _real=real, **kwargs):
            calls.append(None)
            if len(calls) == step:
                raise KeyboardInterrupt
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(xn.Adam, method, then_maybe_interrupt)


def test_ctrl_c_mid_epoch_saves_the_last_completed_epoch(tmp_path, monkeypatch, capsys):
    # spirals: 800 training samples, 25 batches of 32 per epoch; stop 5 steps into epoch 3
    reference = tmp_path / "two_epochs.npz"
    assert cli.main(["train", "--epochs", "2", "--layers", "4", "--save", str(reference)]) == 0
    capsys.readouterr()
    interrupt_at_step(monkeypatch, 2 * 25 + 5)
    saved = tmp_path / "m.npz"
    assert cli.main(["train", "--epochs", "5", "--layers", "4", "--save", str(saved)]) == 130
    out = one_line(capsys, "interrupted", "after epoch 2/5", str(saved))
    assert "epoch 2/5" in out and "epoch 3/5" not in out
    # exactly the model (and optimizer state) of a clean two-epoch run
    expected, got = host_params(reference), host_params(saved)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    assert xn.load(str(saved)).optimizer.iterations == 50


def test_ctrl_c_before_the_first_epoch_ends_saves_nothing(tmp_path, monkeypatch, capsys):
    saved = tmp_path / "m.npz"
    saved.write_bytes(b"an older model")
    interrupt_at_step(monkeypatch, 3)
    assert cli.main(["train", *SMALL, "--save", str(saved)]) == 130
    one_line(capsys, "interrupted before the first epoch", "nothing saved")
    assert saved.read_bytes() == b"an older model"


def test_ctrl_c_while_loading_the_data_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.cli_data, "load_data", interrupted)
    assert cli.main(["train", *SMALL, "--save", str(tmp_path / "m.npz")]) == 130
    one_line(capsys, "interrupted before the first epoch", "nothing saved")
    assert not (tmp_path / "m.npz").exists()


def test_ctrl_c_without_save_is_one_line_and_status_130(monkeypatch, capsys):
    interrupt_at_step(monkeypatch, 3)
    assert cli.main(["train", *SMALL]) == 130
    one_line(capsys, "interrupted")


def test_a_second_ctrl_c_cannot_break_the_save():
    with cli_main._ignoring_interrupts():
        os.kill(os.getpid(), signal.SIGINT)  # ignored: no KeyboardInterrupt here
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_real_sigint_saves_a_loadable_model_and_exits_130(tmp_path):
    saved = tmp_path / "m.npz"
    proc = spawn("train", "--epochs", "100000", "--layers", "4", "--save", str(saved),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in proc.stdout:
            if line.startswith("epoch"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "saved the model as it was after epoch" in lines[0], err
    assert xn.load(str(saved)).n_in == 2


# ------------------------------------------------------------------- family 4: outputs first


def test_a_bad_plot_format_fails_before_training_and_writes_no_model(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    saved = tmp_path / "m.npz"
    assert cli.main(["train", *SMALL, "--plot", str(tmp_path / "p.txt"),
                     "--save", str(saved)]) == 2
    out = one_line(capsys, "--plot", ".txt", ".png")
    assert "epoch" not in out and not saved.exists()


@pytest.mark.parametrize("flag, name, needle", [
    ("--plot", "curves", "no extension"),
    ("--plot", "missing/p.png", "does not exist"),
    ("--plot", "adir.png", "is a folder"),
    ("--save", "missing/m.npz", "does not exist"),
    ("--save", "afile/m.npz", "is a file, not a folder"),
    ("--save", "adir.png", ".npz"),
    ("--save", "adir.npz", "is a folder"),
])
def test_unwritable_outputs_fail_before_training(tmp_path, capsys, flag, name, needle):
    if flag == "--plot":
        pytest.importorskip("matplotlib")
    (tmp_path / "adir.png").mkdir()
    (tmp_path / "adir.npz").mkdir()
    (tmp_path / "afile").write_text("")
    before = sorted(os.listdir(tmp_path))
    assert cli.main(["train", *SMALL, flag, str(tmp_path / name)]) == 2
    assert "epoch" not in one_line(capsys, flag, needle)
    assert sorted(os.listdir(tmp_path)) == before


def test_a_read_only_folder_fails_before_training(tmp_path, monkeypatch, capsys):
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False
                        if os.fspath(path) == str(tmp_path) else real(path, mode))
    assert cli.main(["train", *SMALL, "--save", str(tmp_path / "m.npz")]) == 2
    assert "epoch" not in one_line(capsys, "--save", "not writable")


def test_save_may_not_overwrite_the_training_data(tmp_path, capsys):
    X, y = datasets.xor(n_samples=40)
    data = tmp_path / "d.npz"
    np.savez(data, X=X, y=y)
    before = data.read_bytes()
    assert cli.main(["train", *SMALL, "--data", str(data), "--save", str(data)]) == 2
    one_line(capsys, "would overwrite the --data file")
    assert data.read_bytes() == before


def test_a_plot_that_fails_while_writing_still_leaves_the_saved_model(tmp_path, monkeypatch,
                                                                     capsys):
    pytest.importorskip("matplotlib")

    def no_latex(history, path):
        raise RuntimeError("LaTeX is not installed")

    monkeypatch.setattr(cli_main, "_plot", no_latex)
    saved = tmp_path / "m.npz"
    assert cli.main(["train", *SMALL, "--plot", str(tmp_path / "p.pgf"),
                     "--save", str(saved)]) == 2
    out = one_line(capsys, "--plot", "LaTeX", f"the model was saved to {saved}")
    assert "model saved to" in out
    assert xn.load(str(saved)).n_in == 2


def test_predict_checks_out_before_loading_and_never_overwrites_an_input(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert cli.main(["train", *SMALL, "--save", str(model)]) == 0
    capsys.readouterr()
    before = model.read_bytes()
    assert cli.main(["predict", "--model", str(tmp_path / "absent.npz"), "--data", "spirals",
                     "--out", str(tmp_path / "no" / "p.npy")]) == 2
    one_line(capsys, "--out", "does not exist")
    assert cli.main(["predict", "--model", str(model), "--data", "spirals",
                     "--out", str(model)]) == 2
    one_line(capsys, "--out", "would overwrite the --model file")
    assert model.read_bytes() == before


# --------------------------------------------------------------------------- family 5: memory


def write_csv(path, X, y) -> str:
    rows = [",".join([*(f"{v:.4f}" for v in x), str(t)]) for x, t in zip(X, y, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.mark.parametrize("stray, needle", [
    (10**12, "label 1000000000000"),  # the '466 TiB' allocation of issue 9
    (40, "label 40"),  # 41 classes for 30 samples
])
def test_a_stray_label_is_one_line_not_an_allocation(tmp_path, capsys, stray, needle):
    X, y = datasets.xor(n_samples=30)
    y[7] = stray
    data = write_csv(tmp_path / "d.csv", X, y)
    assert cli.main(["train", *SMALL, "--data", data, "--save", str(tmp_path / "m.npz")]) == 2
    assert "epoch" not in one_line(capsys, needle, "(sample 8)", "distinct labels")
    assert not (tmp_path / "m.npz").exists()


def test_a_layer_too_large_to_index_is_refused_whatever_the_memory(capsys):
    assert cli.main(["train", "--epochs", "1", "--layers", "2000000,2000000"]) == 2
    one_line(capsys, "dense layer 2 of 3 (2000000 -> 2000000)", "2**40", "--layers")


def test_a_model_larger_than_free_memory_is_refused_before_it_is_built(monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_bytes", lambda backend: 2**30)
    built = []
    monkeypatch.setattr(xn, "mlp", lambda *a, **k: built.append(a))
    assert cli.main(["train", "--epochs", "1", "--layers", "100000,100000"]) == 2
    one_line(capsys, "dense layer 2 of 3 (100000 -> 100000", "parameters 37.3 GiB",
             "optimizer state 74.5 GiB", "only 1.0 GiB is free", "--layers", "--batch-size")
    assert built == []


def test_what_the_memory_check_is_told(tmp_path, monkeypatch, capsys):
    seen = []
    real = memory.check_fits

    def spy(backend, widths, batch_size, slots, what, **kwargs):
        seen.append((widths, batch_size, slots, kwargs["snapshots"]))
        return real(backend, widths, batch_size, slots, what, **kwargs)

    monkeypatch.setattr(cli_main, "check_fits", spy)
    assert cli.main(["train", *SMALL, "--optimizer", "sgd", "--batch-size", "1000000000"]) == 0
    assert seen == [([2, 4, 2], 800, 0, 1)]  # fit's divergence guard keeps one snapshot
    assert cli.main(["train", *SMALL, "--save", str(tmp_path / "m.npz")]) == 0
    assert seen[-1] == ([2, 4, 2], 32, 2, 2)  # and Ctrl-C's last completed epoch another


def test_a_memory_error_from_the_library_is_one_line(monkeypatch, capsys):
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 466. TiB for an array")

    monkeypatch.setattr(sys.modules["xpnet.cli.main"], "mlp", no_memory)
    assert cli.main(["train", *SMALL]) == 2
    one_line(capsys, "Unable to allocate 466. TiB")


# --------------------------------------------------------------------------- family 6: one line


def test_predict_into_a_closed_pipe_exits_0_and_says_nothing(tmp_path):
    model = tmp_path / "m.npz"
    assert cli.main(["train", *SMALL, "--save", str(model)]) == 0
    # far more than a pipe buffer holds, so the writes after head leaves must fail
    np.savez(tmp_path / "many.npz", X=np.zeros((100_000, 2), dtype=np.float32))
    for output in ("labels", "values"):
        proc = spawn("predict", "--model", str(model), "--data", str(tmp_path / "many.npz"),
                     "--output", output, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        head = subprocess.Popen(["head", "-1"], stdin=proc.stdout, stdout=subprocess.PIPE,
                                text=True)
        proc.stdout.close()  # head holds the only reading end now
        first = head.communicate(timeout=60)[0]
        err = proc.stderr.read()
        proc.stderr.close()
        assert proc.wait(timeout=60) == 0, err
        assert err == "" and len(first.splitlines()) == 1


def test_train_into_a_closed_pipe_still_saves_and_exits_0(tmp_path):
    model = tmp_path / "m.npz"
    proc = spawn("train", "--epochs", "40", "--layers", "4", "--save", str(model),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-3"], stdin=proc.stdout, stdout=subprocess.PIPE, text=True)
    proc.stdout.close()
    head.communicate(timeout=60)
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, err
    assert err == "" and xn.load(str(model)).n_in == 2


def test_divergence_is_exactly_one_line_with_epochs_counted_from_1():
    proc = spawn("train", "--epochs", "2", "--layers", "8", "--lr", "1e30",
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "RuntimeWarning" not in err and "non-finite" in lines[0]
    assert "epoch 1, batch" in lines[0] and "counted from 0" not in lines[0]


def test_no_numpy_warning_escapes_a_diverging_run(capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["train", "--epochs", "2", "--layers", "8", "--lr", "1e30"]) == 2
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    one_line(capsys, "non-finite")


# --------------------------------------------------------------------------- family 7: correctness


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two models on two features: one output (regression) and three (classes 0, 1, 2)."""
    folder = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2)).astype(np.float32)
    np.savez(folder / "reg.npz", X=X, y=(X @ [1.0, -1.0]).astype(np.float32))
    np.savez(folder / "cls.npz", X=X, y=np.arange(60) % 3)
    paths = {}
    for width, data in ((1, "reg.npz"), (3, "cls.npz")):
        paths[width] = str(folder / f"w{width}.npz")
        assert cli.main(["train", "--data", str(folder / data), "--epochs", "1", "--layers",
                         "3", "--validation-split", "0", "--save", paths[width]]) == 0
    return folder, paths


def targets(kind: str, width: int, n: int):
    if kind == "absent":
        return None
    if kind == "labels":
        return np.arange(n) % (2 if width == 1 else 3)
    return np.linspace(-1, 1, n * width).reshape(n, width).squeeze(axis=1 if width == 1 else None)


# what stderr says, by (printed kind, model width, kind of y); None: nothing
SCORES = {
    ("labels", 1, "labels"): "accuracy", ("labels", 3, "labels"): "accuracy",
    ("values", 1, "labels"): "mse", ("values", 1, "values"): "mse",
    ("values", 3, "labels"): "accuracy", ("values", 3, "values"): "mse",
}


@pytest.mark.parametrize("y_kind", ["absent", "labels", "values"])
@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("output", ["auto", "labels", "values"])
def test_every_output_width_and_target_combination(models, capsys, output, width, y_kind):
    folder, paths = models
    n = 12
    X = np.random.default_rng(1).normal(size=(n, 2)).astype(np.float32)
    y = targets(y_kind, width, n)
    data = folder / f"p-{output}-{width}-{y_kind}.npz"
    np.savez(data, X=X, **({} if y is None else {"y": y}))
    capsys.readouterr()
    assert cli.main(["predict", "--model", paths[width], "--data", str(data),
                     "--output", output]) == 0
    captured = capsys.readouterr()
    kind = "labels" if output == "labels" or (output == "auto" and width > 1) else "values"
    rows = [line.split(",") for line in captured.out.splitlines()]
    assert len(rows) == n
    assert {len(row) for row in rows} == {width if kind == "values" else 1}
    if kind == "labels":
        assert all(cell.isdigit() for row in rows for cell in row)
    expected = SCORES.get((kind, width, y_kind))
    err = captured.err.strip().splitlines()
    if expected is None:
        assert err == []
    else:
        assert len(err) == 1 and err[0].startswith(expected) and f"on {n} samples" in err[0]


def test_a_bad_first_row_is_reported_not_taken_as_a_header(models, capsys):
    folder, paths = models
    data = folder / "bad_first_row.csv"
    data.write_text("0.5,oops\n0.1,0.2\n0.3,0.4\n")
    assert cli.main(["predict", "--model", paths[3], "--data", str(data)]) == 2
    assert one_line(capsys, "line 1, column 2", "'oops'", "delimiter ','") == ""
    assert cli.main(["train", *SMALL, "--data", str(data)]) == 2
    one_line(capsys, "line 1, column 2", "'oops'")


@pytest.mark.parametrize("separator, flag", [(";", []), ("\t", []), (" ", []), (";", [";"]),
                                             ("|", ["|"]), ("\t", ["tab"])])
def test_delimiters_are_detected_or_given_for_train_and_predict(tmp_path, capsys, separator,
                                                                flag):
    X, y = datasets.xor(n_samples=40)
    rows = [separator.join([f"{a:.4f}", f"{b:.4f}", str(t)]) for (a, b), t in zip(X, y,
                                                                                   strict=True)]
    data = tmp_path / "d.csv"
    data.write_text(f"a{separator}b{separator}label\n" + "\n".join(rows) + "\n")
    extra = ["--delimiter", *flag] if flag else []
    model = tmp_path / "m.npz"
    assert cli.main(["train", *SMALL, "--data", str(data), *extra, "--save", str(model)]) == 0
    assert "40 samples, 2 features, 2 classes" in capsys.readouterr().out
    assert cli.main(["predict", "--model", str(model), "--data", str(data), *extra]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 40 and "accuracy" in captured.err


def test_the_wrong_delimiter_is_named(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("1;2;0\n3;4;1\n")
    assert cli.main(["train", *SMALL, "--data", str(data), "--delimiter", ","]) == 2
    one_line(capsys, "delimiter ','", "pass --delimiter")
    assert cli.main(["train", *SMALL, "--delimiter", "x"]) == 2
    one_line(capsys, "--delimiter", "'x'")


@pytest.mark.parametrize("command", ["train", "predict"])
def test_help_shows_every_default(command, capsys):
    assert cli.main([command, "--help"]) == 0
    text = capsys.readouterr().out
    options = text.split("options:")[1].split("\n\n")[0]
    blocks: list[str] = []  # one per option, its wrapped help lines joined
    for line in options.splitlines():
        if line.startswith("  -"):
            blocks.append(line)
        elif blocks:
            blocks[-1] += " " + line.strip()
    blocks = [b for b in blocks if not b.startswith("  -h")]
    assert len(blocks) >= (13 if command == "train" else 6)
    for block in blocks:
        assert "(default: " in block or "(required)" in block, block
    # usage errors stay one line
    assert cli.main([command, "--epochs" if command == "train" else "--output", "x"]) == 2
    one_line(capsys, "error:", "'x'")
