"""Bundled data sets: shapes, dtypes, determinism by seed, the articles' toys, files, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from xpnet import DataError
from xpnet.data import datasets

GENERATED = {
    "spirals": datasets.spirals,
    "moons": datasets.moons,
    "circles": datasets.circles,
    "xor": datasets.xor,
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_classification_sets_shape_dtype_and_balance(name):
    X, y = GENERATED[name](n_samples=101, seed=3)
    assert X.shape == (101, 2) and X.dtype == np.float32
    assert y.shape == (101,) and y.dtype == np.int64
    assert set(np.unique(y)) == {0, 1}
    assert np.all(np.isfinite(X))


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_same_seed_same_data_other_seed_other_data(name):
    make = GENERATED[name]
    X1, y1 = make(n_samples=64, seed=7)
    X2, y2 = make(n_samples=64, seed=7)
    X3, _ = make(n_samples=64, seed=8)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


def test_spirals_are_shuffled_so_a_trailing_split_holds_both_classes():
    _, y = datasets.spirals(n_samples=200, seed=0)
    assert set(np.unique(y[-40:])) == {0, 1}


def test_spirals_arms_are_point_symmetric():
    # Without noise, arm 1 is arm 0 turned by half a circle: the same radii.
    X, y = datasets.spirals(n_samples=400, noise=0.0, seed=1)
    r0 = np.sort(np.hypot(*X[y == 0].T))
    r1 = np.sort(np.hypot(*X[y == 1].T))
    assert r0.max() <= 1.0 + 1e-6 and r1.max() <= 1.0 + 1e-6
    assert abs(r0.mean() - r1.mean()) < 0.1


def test_xor_labels_follow_the_signs():
    X, y = datasets.xor(n_samples=50, seed=0)
    np.testing.assert_array_equal(y, (np.sign(X[:, 0]) != np.sign(X[:, 1])).astype(np.int64))
    X, y = datasets.xor_table()
    np.testing.assert_array_equal(y, np.logical_xor(X[:, 0], X[:, 1]).astype(np.int64))


def test_circles_inner_ring_is_label_one():
    X, y = datasets.circles(n_samples=100, noise=0.0, factor=0.3, seed=0)
    radius = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(radius[y == 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(radius[y == 1], 0.3, atol=1e-5)


def test_linear_is_the_line_and_vectorises():
    X, y = datasets.linear(m=3.0, b=-2.0, n=20, seed=0)
    assert X.shape == (20, 1) and y.shape == (20,) and y.dtype == np.float32
    np.testing.assert_allclose(y, 3.0 * X[:, 0] - 2.0, rtol=1e-5, atol=1e-5)
    X, y = datasets.linear(m=[1.0, -2.0, 0.5], b=1.0, n=30, seed=0)
    assert X.shape == (30, 3)
    np.testing.assert_allclose(y, X @ np.array([1.0, -2.0, 0.5]) + 1.0, rtol=1e-5, atol=1e-5)
    _, noisy = datasets.linear(m=3.0, b=-2.0, n=20, noise=0.5, seed=0)
    assert not np.allclose(noisy, 3.0 * X[:20, 0] - 2.0)


def test_articles_toys_are_the_articles_data():
    X, y = datasets.hidden_layer_toy()
    np.testing.assert_array_equal(X, [[1, 1, 1], [1, 1, 0], [0, 1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(y, [1, 0, 1, 0])
    X, y = datasets.two_layer_toy()
    np.testing.assert_array_equal(X, [[1, 0, 1, 0], [1, 0, 1, 1], [0, 1, 0, 1]])
    np.testing.assert_array_equal(y, [1, 1, 0])
    assert X.dtype == np.float32


def test_digits_when_scikit_learn_is_installed():
    pytest.importorskip("sklearn")
    X, y = datasets.digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= X.min() and X.max() <= 1.0
    assert set(np.unique(y)) == set(range(10))


def test_digits_without_scikit_learn_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"xpnet\[sklearn\]"):
        datasets.digits()


@pytest.mark.parametrize("call, match", [
    (lambda: datasets.spirals(n_samples=0), "n_samples"),
    (lambda: datasets.spirals(n_samples=2.5), "n_samples"),
    (lambda: datasets.spirals(noise=-1.0), "noise"),
    (lambda: datasets.moons(noise=float("nan")), "noise"),
    (lambda: datasets.circles(factor=1.0), "factor"),
    (lambda: datasets.xor(n_samples=True), "n_samples"),
    (lambda: datasets.linear(m="steep"), "m must be"),
    (lambda: datasets.linear(n=0), "n must"),
    (lambda: datasets.linear(low=1.0, high=1.0), "low must be below high"),
    (lambda: datasets.load("mnist"), "unknown data set 'mnist'"),
])
def test_bad_arguments_say_what_is_wrong(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_registry_builds_every_generated_set():
    for name in ("spirals", "moons", "circles", "xor", "linear", "xor_table",
                 "hidden_layer_toy", "two_layer_toy"):
        X, y = datasets.DATASETS[name]()
        assert X.ndim == 2 and X.dtype == np.float32 and y.shape[0] == X.shape[0]
    assert "digits" in datasets.DATASETS


def test_load_file_npz_round_trip(tmp_path):
    X, y = datasets.moons(n_samples=30, seed=0)
    path = tmp_path / "moons.npz"
    np.savez(path, X=X, y=y)
    X2, y2 = datasets.load_file(path)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    assert datasets.load(str(path))[0].shape == (30, 2)


def test_load_file_csv_with_and_without_header(tmp_path):
    body = "0.5,1.0,1\n-0.5,2.0,0\n1.5,-1.0,1\n"
    (tmp_path / "a.csv").write_text("x1,x2,label\n" + body)
    (tmp_path / "b.csv").write_text(body)
    for name in ("a.csv", "b.csv"):
        X, y = datasets.load_file(tmp_path / name)
        np.testing.assert_array_equal(X, [[0.5, 1.0], [-0.5, 2.0], [1.5, -1.0]])
        assert y.dtype == np.int64 and list(y) == [1, 0, 1]
    (tmp_path / "reg.csv").write_text("1,0.25\n2,0.5\n")
    _, y = datasets.load_file(tmp_path / "reg.csv")
    assert y.dtype == np.float32 and list(y) == [0.25, 0.5]


@pytest.mark.parametrize("name, content, match", [
    ("missing.csv", None, "does not exist"),
    ("data.json", "1,2\n", "unknown format"),
    ("ragged.csv", "1,2,3\n4,5\n", "line 2 has 2 columns, but line 1 has 3"),
    ("words.csv", "a,b\n1,x\n", "not a number"),
    ("one.csv", "1\n2\n", "at least two columns"),
    ("empty.csv", "x,y\n", "no data rows"),
    ("broken.npz", "not a zip", "not a readable .npz"),
])
def test_load_file_bad_files_raise_data_error(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match):
        datasets.load_file(path)


def test_load_file_npz_without_y(tmp_path):
    path = tmp_path / "only_x.npz"
    np.savez(path, X=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"lacks array\(s\) \['y'\]"):
        datasets.load_file(path)


# Files are data too: the same checks as fit's (issue 9, family 4). Before, a float64 file
# value of 1e300 became Inf silently, complex parts and durations were cast away, and a CSV
# label of 1e20 or a uint64 past 2**63 wrapped around to a negative int64.


@pytest.mark.parametrize("X, y, words", [
    (np.full((3, 2), 1e300), np.zeros(3), ["X", "1e+300", "float32's range"]),
    (np.zeros((3, 2)), np.full(3, -1e300), ["y", "-1e+300"]),
    (np.ones((3, 2)) + 1j, np.zeros(3), ["X", "complex"]),
    (np.zeros((3, 2), "m8[s]"), np.zeros(3), ["X", "durations"]),
    (np.full((3, 2), "a"), np.zeros(3), ["X", "text"]),
    (np.zeros((3, 2)), np.full(3, 2**63 + 5, dtype=np.uint64), ["y", "9223372036854775813"]),
    (np.full((3, 2), np.nan), np.zeros(3), ["X", "NaN", "row 0, column 0"]),
])
def test_load_file_refuses_what_fit_would_refuse(tmp_path, X, y, words):
    path = tmp_path / "bad.npz"
    np.savez(path, X=X, y=y)
    with pytest.raises(DataError) as info:
        datasets.load_file(path)
    for word in [str(path), *words]:
        assert word in str(info.value), (word, str(info.value))
    assert "dtype='float64'" not in str(info.value)  # load_file always gives float32


def test_load_file_csv_keeps_labels_that_int64_cannot_hold_as_values(tmp_path):
    (tmp_path / "big.csv").write_text("1,2,1e20\n3,4,0\n")
    _, y = datasets.load_file(tmp_path / "big.csv")
    assert y.dtype == np.float32 and y[0] == np.float32(1e20)
    (tmp_path / "huge.csv").write_text("1e300,2,1\n3,4,0\n")
    with pytest.raises(DataError, match=r"X holds values beyond float32's range.*1e\+300"):
        datasets.load_file(tmp_path / "huge.csv")


def test_load_file_reads_bool_features_as_zero_and_one(tmp_path):
    path = tmp_path / "bool.npz"
    np.savez(path, X=np.array([[True, False], [False, True]]), y=np.array([True, False]))
    X, y = datasets.load_file(path)
    assert X.dtype == np.float32 and X.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert y.dtype == np.int64 and y.tolist() == [1, 0]


# --------------------------------------------------------------------------- text tables
# One reader for datasets.load and the command line (issue 9): a header only when no cell
# of the first row is a number, bad cells by line, column and text, the delimiter detected.


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, expected", [
    ("1,2,3\n4,5,6\n", ","),
    ("1;2;3\n4;5;6\n", ";"),
    ("1\t2\t3\n4\t5\t6\n", "\t"),
    ("1 2   3\n 4 5 6\n", datasets.WHITESPACE),
    ("x;y;label\n1,5;2,5;0\n", ";"),  # decimal commas: ';' is the one consistent split
    ("42\n43\n", ","),  # one column: nothing to detect
])
def test_detect_delimiter(text, expected):
    assert datasets.detect_delimiter(text.splitlines()) == expected


def test_a_header_is_a_first_row_without_any_number(tmp_path):
    table, used = datasets.read_table(write(tmp_path, "x1,x2,label\n1,2,0\n3,4,1\n"))
    assert used == "," and table.tolist() == [[1, 2, 0], [3, 4, 1]]
    table, _ = datasets.read_table(write(tmp_path, "1,2,0\n3,4,1\n"))
    assert table.shape == (2, 3)


@pytest.mark.parametrize("text, needles", [
    # a header-less file whose first row has one bad cell was taken as a header
    ("1.0,abc,0\n3,4,1\n", ["line 1, column 2", "'abc'", "header"]),
    ("x,2,label\n3,4,1\n", ["line 1, column 1", "'x'", "header"]),
    ("x,y,label\n1,2,0\n3,,1\n", ["line 3, column 2", "''"]),
    ("1,2,0\n\n3,4,oops\n", ["line 3, column 3", "'oops'"]),  # blank lines keep numbering
    ("1,2,0\n3,nan,1\n", ["line 2, column 2", "'nan'", "finite"]),
    ("1,2,0\n3,4\n", ["line 2 has 2 columns", "line 1 has 3"]),
    ("x,y\n", ["header but no data rows"]),
    ("\n\n", ["no data rows"]),
])
def test_bad_tables_name_the_line_column_text_and_delimiter(tmp_path, text, needles):
    with pytest.raises(DataError) as info:
        datasets.read_table(write(tmp_path, text))
    message = str(info.value)
    assert "(delimiter ',')" in message or "no data rows" in message, message
    for needle in needles:
        assert needle in message, message


def test_quoted_cells_and_spaces_after_the_delimiter(tmp_path):
    table, _ = datasets.read_table(write(tmp_path, '"x, first","y"\n"1", 2\n 3 ,"4"\n'))
    assert table.tolist() == [[1, 2], [3, 4]]


def test_a_cell_holding_another_delimiter_says_how_to_give_it(tmp_path):
    path = write(tmp_path, "0.1;0.2;0\n0.3;0.4;1\n")
    with pytest.raises(DataError, match=r"holds ';': pass delimiter=\.\.\. if"):
        datasets.read_table(path, ",")
    with pytest.raises(DataError, match=r"holds ';': pass --delimiter if"):
        datasets.read_table(path, ",", option="--delimiter")
    assert datasets.read_table(path)[1] == ";"


def test_byte_order_marks_and_binary_files(tmp_path):
    table, _ = datasets.read_table(write(tmp_path, b"\xef\xbb\xbf1,2,0\n3,4,1\n"))
    assert table[0, 0] == 1.0
    with pytest.raises(DataError, match="not a text file"):
        datasets.read_table(write(tmp_path, b"PK\x03\x04\xff\xfe\x00\x81"))


def test_load_file_takes_a_header_only_when_no_first_row_cell_is_a_number(tmp_path):
    with pytest.raises(DataError, match=r"line 1, column 2: 'abc' is not a number.*header"):
        datasets.load_file(write(tmp_path, "1.0,abc,0\n3,4,1\n5,6,0\n"))


@pytest.mark.parametrize("text", ["1;2;0\n3;4;1\n", "1\t2\t0\n3\t4\t1\n",
                                  "1  2 0\n3 4   1\n", "a,b,y\n1,2,0\n3,4,1\n"])
def test_load_file_detects_the_delimiter(tmp_path, text):
    X, y = datasets.load_file(write(tmp_path, text))
    assert X.tolist() == [[1, 2], [3, 4]] and y.tolist() == [0, 1]


def test_load_file_and_load_take_a_delimiter(tmp_path):
    path = write(tmp_path, "1|2|0\n3|4|1\n")
    X, _ = datasets.load_file(path, delimiter="|")
    assert X.tolist() == [[1, 2], [3, 4]]
    assert datasets.load(path, delimiter="|")[0].tolist() == [[1, 2], [3, 4]]
    with pytest.raises(DataError, match=r"\(delimiter ','\): line 2, column 1: '3\|4\|1'"):
        datasets.load_file(path, delimiter=",")
    for bad in ("||", 3, ""):
        with pytest.raises(ValueError, match="delimiter must be None"):
            datasets.load_file(path, delimiter=bad)


@pytest.mark.parametrize("name", ["t.tsv", "t.txt", "T.CSV"])
def test_tsv_and_txt_tables_load_like_csv(tmp_path, name):
    X, y = datasets.load(write(tmp_path, "a\tb\ty\n1\t2\t0\n3\t4\t1\n", name))
    assert X.tolist() == [[1, 2], [3, 4]] and y.tolist() == [0, 1]


def test_whole_numbers_are_labels_up_to_2_to_the_53(tmp_path):
    _, y = datasets.load_file(write(tmp_path, f"1,{2**53}\n2,-{2**53}\n"))
    assert y.dtype == np.int64 and y.tolist() == [2**53, -(2**53)]
    _, y = datasets.load_file(write(tmp_path, f"1,{2**53 + 2}\n2,0\n"))
    assert y.dtype == np.float32


def test_a_folder_is_not_a_data_file(tmp_path):
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match="is a folder, not a file"):
        datasets.load_file(tmp_path / "folder.csv")
