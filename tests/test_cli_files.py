"""cli.files: CSV tables (header, delimiter, bad cells), class counts, predictions and scores,
and output paths that are checked before any work is done."""

from __future__ import annotations

import os

import numpy as np
import pytest

from xpnet.cli import files
from xpnet.data import datasets


def write(tmp_path, text: str, name: str = "t.csv", mode: str = "w") -> str:
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- delimiters
# Tables themselves (header, bad cells, detection) are read by datasets.read_table, which
# tests/test_datasets.py covers; here: the flag, and that its errors name the flag.


@pytest.mark.parametrize("text, expected", [
    ("auto", files.AUTO), (",", ","), (";", ";"), ("tab", "\t"), ("\t", "\t"), ("\\t", "\t"),
    ("TAB", "\t"), ("whitespace", datasets.WHITESPACE), ("space", datasets.WHITESPACE),
    (" ", datasets.WHITESPACE), ("|", "|"), ("comma", ","), ("semicolon", ";"),
])
def test_parse_delimiter(text, expected):
    assert files.parse_delimiter(text) == expected


@pytest.mark.parametrize("text", ["", "ab", "1", "e", ".", "-", "+", "_", '"', "\n"])
def test_parse_delimiter_refuses_what_could_be_part_of_a_number(text):
    with pytest.raises(ValueError, match="one character"):
        files.parse_delimiter(text)


# --------------------------------------------------------------------------- tables


def test_a_cell_holding_another_delimiter_suggests_the_flag(tmp_path):
    path = write(tmp_path, "0.1;0.2;0\n0.3;0.4;1\n")
    with pytest.raises(ValueError, match=r"holds ';': pass --delimiter"):
        files.load_data(path, seed=0, delimiter=",")
    with pytest.raises(ValueError, match=r"holds ';': pass --delimiter"):
        files.read_features(path, n_in=2, delimiter=",")
    np.testing.assert_allclose(files.load_data(path, seed=0)[0], [[0.1, 0.2], [0.3, 0.4]])


def test_training_csv_reads_labels_targets_and_refuses_one_column(tmp_path):
    X, y = files.load_data(write(tmp_path, "a;b;y\n1;2;0\n3;4;2\n"), seed=0)
    assert X.dtype == np.float32 and y.dtype == np.int64 and y.tolist() == [0, 2]
    _, y = files.load_data(write(tmp_path, "1,2,0.5\n3,4,2\n"), seed=0)
    assert y.dtype == np.float32
    _, y = files.load_data(write(tmp_path, "1,2,1e30\n3,4,2\n"), seed=0)  # no int64 overflow
    assert y.dtype == np.float32 and y[0] == np.float32(1e30)
    for text in ("1,2,1e300\n3,4,2\n", "1,1e300,2\n3,4,2\n"):  # nor a silent inf
        with pytest.raises(ValueError, match="beyond float32's range"):
            files.load_data(write(tmp_path, text), seed=0)
    with pytest.raises(ValueError, match="at least two columns.*split on ','"):
        files.load_data(write(tmp_path, "1\n2\n"), seed=0)
    with pytest.raises(ValueError, match="does not exist"):
        files.load_data(str(tmp_path / "absent.csv"), seed=0)


@pytest.mark.parametrize("name", ["t.tsv", "t.txt", "T.CSV"])
def test_tsv_and_txt_tables_are_read_like_csv(tmp_path, name):
    X, y = files.load_data(write(tmp_path, "a\tb\ty\n1\t2\t0\n3\t4\t1\n", name), seed=0)
    assert X.tolist() == [[1, 2], [3, 4]] and y.tolist() == [0, 1]
    X, y = files.read_features(str(tmp_path / name), n_in=2)
    assert y.tolist() == [0, 1]


def test_data_without_feature_columns_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 0)), y=np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="no feature columns"):
        files.load_data(str(tmp_path / "d.npz"), seed=0)


def test_prediction_csv_is_features_then_optional_targets(tmp_path):
    X, y = files.read_features(write(tmp_path, "1,2\n3,4\n"), n_in=2)
    assert X.shape == (2, 2) and y is None
    X, y = files.read_features(write(tmp_path, "1,2,1\n3,4,0\n"), n_in=2)
    assert y.tolist() == [1, 0] and y.dtype == np.int64
    _, y = files.read_features(write(tmp_path, "1,2,0.5,1.5\n3,4,2.5,3.5\n"), n_in=2)
    assert y.shape == (2, 2)
    with pytest.raises(ValueError, match="has 2 columns, but the model takes 3 features"):
        files.read_features(write(tmp_path, "1,2\n3,4\n"), n_in=3)


@pytest.mark.parametrize("arrays, needle", [
    ({"X": np.zeros((4, 2)), "y": np.zeros(3)}, "X has 4 rows but y has shape (3,)"),
    ({"X": np.zeros((4, 2)), "y": np.array(["a", "b", "c", "d"])}, "real numbers"),
    ({"X": np.zeros((4, 2)), "y": np.array([0, 1, np.nan, 1])}, "NaN"),
    ({"X": np.zeros((4, 2)), "y": np.zeros((4, 2, 2))}, "one row per sample"),
])
def test_npz_targets_that_do_not_fit_x_are_refused(tmp_path, arrays, needle):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError) as info:
        files.read_features(str(tmp_path / "d.npz"), n_in=2)
    assert needle in str(info.value)


# --------------------------------------------------------------------------- classes


@pytest.mark.parametrize("y, expected", [
    ([0, 1, 1, 0], 2), ([0, 0, 0], 2), ([0, 1, 2, 3], 4), ([3, 0, 1, 1, 0], 4),
    (list(range(1500)) * 2, 1500),  # many classes, all present: fine
])
def test_class_count(y, expected):
    assert files.class_count(np.array(y, dtype=np.int64)) == expected


@pytest.mark.parametrize("y, needle", [
    ([0, 1, 10**12, 0], "label 1000000000000 (sample 3)"),
    ([0, 1, 2, 3, 40], "label 40 (sample 5)"),  # more classes than samples
    ([0, 1] * 1500 + [1500], "label 1500 (sample 3001)"),  # 1501 classes, 3 present
    ([0, -1, 1], "label -1 (sample 2) is negative"),
])
def test_a_stray_label_is_named_instead_of_allocating_its_classes(y, needle):
    with pytest.raises(ValueError) as info:
        files.output_width(np.array(y, dtype=np.int64), "cross_entropy")
    assert needle in str(info.value)


# --------------------------------------------------------------------------- predictions


def test_predictions_labels_values_and_one_output_logits():
    wide = np.array([[0.1, 0.9, 0.0], [2.0, 0.5, 0.1]])
    narrow = np.array([[-0.5], [1.5]])
    assert files.predictions(wide, "auto")[0].tolist() == [1, 0]
    assert files.predictions(wide, "values")[0].shape == (2, 3)
    assert files.predictions(narrow, "auto")[0].tolist() == [-0.5, 1.5]
    labels, kind = files.predictions(narrow, "labels")
    assert kind == "labels" and labels.tolist() == [0, 1]


@pytest.mark.parametrize("kind, width, y, expected", [
    ("labels", 3, None, None),
    ("labels", 3, [1, 0], "accuracy 0.5000"),
    ("labels", 3, [[0, 1, 0], [1, 0, 0]], "accuracy 0.5000"),  # one-hot rows
    ("labels", 3, [0.5, 1.5], None),
    ("labels", 1, [0, 1], "accuracy"),
    ("values", 3, [1, 0], "accuracy 0.5000"),  # the reshape crash of issue 9
    ("values", 3, [[0.0, 1.0, 0.0], [0.5, 0.5, 0.5]], "mse"),
    ("values", 3, [0.5, 1.5], None),
    ("values", 1, [0, 1], "mse"),
    ("values", 1, [[0.5], [1.5]], "mse"),
    ("values", 1, [[0.5, 1.0], [1.5, 1.0]], None),
])
def test_score_compares_only_what_is_comparable(kind, width, y, expected):
    out = np.array([[0.1, 0.9, 0.0], [0.2, 0.7, 0.1]])[:, :width]
    result, got_kind = files.predictions(out, kind)
    assert got_kind == kind
    line = files.score(out, result, kind, None if y is None else np.array(y))
    if expected is None:
        assert line is None
    else:
        assert line is not None and line.startswith(expected) and "on 2 samples" in line


# --------------------------------------------------------------------------- output paths


def test_output_paths_are_checked(tmp_path, monkeypatch):
    files.check_save_path(str(tmp_path / "m.npz"))
    (tmp_path / "dir.npz").mkdir()
    (tmp_path / "file").write_text("")
    for path, needle in [(tmp_path / "m.pt", ".npz"), (tmp_path / "dir.npz", "is a folder"),
                         (tmp_path / "no" / "m.npz", "does not exist"),
                         (tmp_path / "file" / "m.npz", "is a file, not a folder")]:
        with pytest.raises(ValueError, match=needle):
            files.check_save_path(str(path))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(tmp_path)
                        else real_access(p, mode))
    with pytest.raises(ValueError, match="not writable"):
        files.check_save_path(str(tmp_path / "m.npz"))


def test_plot_path_needs_a_format_matplotlib_writes(tmp_path):
    pytest.importorskip("matplotlib")
    files.check_plot_path(str(tmp_path / "curves.PNG"))
    files.check_plot_path(str(tmp_path / "curves.svg"))
    for name, needle in [("p.txt", "extension .txt"), ("curves", "no extension")]:
        with pytest.raises(ValueError, match=needle) as info:
            files.check_plot_path(str(tmp_path / name))
        assert ".png" in str(info.value) and ".pdf" in str(info.value)


def test_an_output_may_not_overwrite_an_input(tmp_path):
    data = tmp_path / "d.npz"
    data.write_bytes(b"x")
    with pytest.raises(ValueError, match="would overwrite the --data file"):
        files.refuse_overwriting("--save", str(data), {"--data": str(data)})
    files.refuse_overwriting("--save", str(tmp_path / "m.npz"), {"--data": str(data)})
    files.refuse_overwriting("--save", str(data), {"--data": "spirals"})
