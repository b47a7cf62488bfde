"""Problem files (fenchel_idl.drivers.problem_file): the mapping to solve_bcd's keywords."""

from pathlib import Path

import numpy as np
import pytest

from fenchel_idl.drivers.problem_file import build_problem, load_data, load_problem
from fenchel_idl.errors import DataNotFoundError, ValidationError
from fenchel_idl.problem.datasets import load_file


@pytest.mark.parametrize("refine_table, want", [("", None), ("[refine]\n", True),
                                                ("[refine]\nepochs = 3\n", {"epochs": 3})])
def test_bcd_options_are_what_the_problem_file_states(tmp_path, refine_table, want):
    """One mapping from a problem file to solve_bcd's keywords (the CLI, the experiments,
    the demos and the benchmarks use it): every stated value, the defaults otherwise, and
    the three meanings of [refine] (absent, empty, with options)."""
    from fenchel_idl.drivers.problem_file import bcd_options, load_problem

    head = ('name = "t"\nseed = 4\n[data]\nsource = "cosine"\nm = 20\n[model]\nn = 3\n'
            '[training]\nlam = 10.0\n')
    path = tmp_path / "t.toml"
    path.write_text(head + "max_sweeps = 7\ntol = 1e-4\n[schedule]\nline_search = false\n"
                    '[solver]\nname = "OSQP"\non_failure = "raise"\ngap_tol = 1e-5\n'
                    + refine_table)
    opts = bcd_options(load_problem(path))
    assert opts == {"max_sweeps": 7, "tol": 1e-4, "schedule": {"line_search": False},
                    "seed": 4, "solver": "OSQP", "on_failure": "raise", "gap_tol": 1e-5,
                    "refine": want}
    assert "refine" not in bcd_options(load_problem(path), refine=False)
    path.write_text(head)
    assert bcd_options(load_problem(path), refine=False) == {
        "max_sweeps": 40, "tol": 1e-6, "schedule": None, "seed": 4, "solver": None,
        "on_failure": "fallback", "gap_tol": 1e-6}
    # [training] ab_prox: passed on when stated (to either driver), refused when not > 0
    path.write_text(head + "ab_prox = 0.01\n")
    assert bcd_options(load_problem(path), refine=False)["ab_prox"] == 0.01
    path.write_text(head + "ab_prox = 0.0\n")
    with pytest.raises(ValidationError, match="'ab_prox' must be in"):
        load_problem(path)


# -- your own data: [data] source = "csv" | "npz" | "npy" ---------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _problem(folder, data_lines):
    path = folder / "p.toml"
    path.write_text('name = "own"\nseed = 1\n[data]\n' + data_lines + "[model]\nn = 3\n")
    return path


def _table_csv(path, header, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(header) + "\n"
                    + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in table))


def test_csv_path_is_read_from_the_problem_files_directory(tmp_path, monkeypatch, rng):
    """A relative path is relative to the problem file, not to the working directory; an
    absolute path is kept; test_fraction holds out a seeded share as for built-in sets."""
    table = np.round(rng.normal(size=(20, 3)), 6)
    _table_csv(tmp_path / "data" / "t.csv", ["u1", "u2", "y"], table)
    monkeypatch.chdir(REPO)  # elsewhere: the relative path must not be read from here
    spec = load_problem(_problem(tmp_path, 'source = "csv"\npath = "data/t.csv"\n'
                                           'target = "y"\n'))
    train, test = load_data(spec)
    assert test is None and train.task == "regression"
    np.testing.assert_array_equal(train.U, table[:, :2].T)
    np.testing.assert_array_equal(train.Y, table[:, 2:].T)
    absolute = str((tmp_path / "data" / "t.csv").resolve())
    spec = load_problem(_problem(tmp_path, f'source = "CSV"\npath = {absolute!r}\ntarget = 2\n'
                                           'test_fraction = 0.25\n'))
    train, test = load_data(spec)
    assert (train.m, test.m) == (15, 5)
    full = np.c_[train.X_rows, train.y_rows].tolist() + np.c_[test.X_rows, test.y_rows].tolist()
    assert sorted(full) == sorted(table.tolist())


def test_csv_with_a_separate_test_file_keeps_the_training_columns_and_classes(tmp_path, rng):
    """test_path is read with the training file's columns (by name, in any order), task and
    class values: a test file holding only some of the classes is labelled the same way."""
    X = np.round(rng.normal(size=(12, 2)), 6)
    cls = np.array([2, 4, 6] * 4)
    _table_csv(tmp_path / "train.csv", ["a", "b", "label"], np.c_[X, cls])
    Xt = np.round(rng.normal(size=(3, 2)), 6)
    _table_csv(tmp_path / "test.csv", ["label", "b", "a"], np.c_[[6, 2, 6], Xt[:, 1], Xt[:, 0]])
    spec = load_problem(_problem(tmp_path, 'source = "csv"\npath = "train.csv"\n'
                                           'test_path = "test.csv"\ntarget = "label"\n'))
    train, test = load_data(spec)
    assert train.task == test.task == "classification"
    assert train.class_names == test.class_names == ("2", "4", "6")
    np.testing.assert_array_equal(test.U, Xt.T)
    np.testing.assert_array_equal(test.labels, [2, 0, 2])
    np.testing.assert_array_equal(train.labels, np.searchsorted([2, 4, 6], cls))
    # the loss follows the inferred task
    assert build_problem(spec, train).loss.name == "cross_entropy"


def test_npz_and_npy_sources(tmp_path, rng):
    X, y = rng.normal(size=(10, 3)), rng.normal(size=10)
    np.savez(tmp_path / "train.npz", X=X, y=y)
    np.savez(tmp_path / "test.npz", X=2 * X[:4], y=y[:4])
    train, test = load_data(load_problem(_problem(
        tmp_path, 'source = "npz"\npath = "train.npz"\ntest_path = "test.npz"\n')))
    np.testing.assert_array_equal(train.U, X.T)
    np.testing.assert_array_equal(test.U, 2 * X[:4].T)
    np.testing.assert_array_equal(test.Y, y[None, :4])
    np.save(tmp_path / "all.npy", np.c_[y, X])
    train, _ = load_data(load_problem(_problem(
        tmp_path, 'source = "npy"\npath = "all.npy"\ntarget = 0\n')))
    np.testing.assert_array_equal(train.U, X.T)
    np.testing.assert_array_equal(train.Y, y[None, :])


@pytest.mark.parametrize("data_lines, exc, match", [
    ('source = "csv"\npath = "none.csv"\ntarget = "y"\n', DataNotFoundError,
     r"\[data\] 'path' = 'none\.csv': the csv file '.*none\.csv' does not exist"),
    ('source = "csv"\npath = "t.csv"\ntest_path = "gone.csv"\ntarget = "y"\n',
     DataNotFoundError, r"\[data\] 'test_path' = 'gone\.csv'"),
    ('source = "csv"\npath = "t.csv"\ntarget = "z"\n', ValidationError,
     r"\[data\] 'path'.*no column 'z'.*\['u', 'y'\]"),
    ('source = "csv"\npath = "t.csv"\ntest_path = "other.csv"\ntarget = "y"\n',
     ValidationError, r"\[data\] 'test_path'.*other\.csv.*no column 'u'.*\['v', 'y'\]"),
    ('source = "csv"\npath = "t.csv"\ntarget = "y"\ntest_path = "t.csv"\ntest_fraction = 0.2\n',
     ValidationError, r"'test_path'.*or 'test_fraction'.*not both"),
    ('source = "csv"\npath = "t.csv"\ntarget = "y"\ncolumns = 3\n', ValidationError,
     r"\[data\] keys must be among.*got \['columns'\]"),
    ('source = "csv"\npath = 3\n', ValidationError, r"\[data\] 'path' must be a string; got 3"),
    ('source = "csv"\npath = "t.csv"\nheader = "yes"\n', ValidationError,
     r"\[data\] 'header' must be true or false"),
    ('source = "parquet"\n', ValidationError,
     r"\[data\] 'source' must be one of \[.*'cosine'.*\] or 'csv', 'npz', 'npy'; got 'parquet'"),
    ('source = 3\n', ValidationError, r"\[data\] 'source' must be.*got 3"),
])
def test_file_source_errors_name_the_key(tmp_path, data_lines, exc, match):
    (tmp_path / "t.csv").write_text("u,y\n1,2\n3,4\n")
    (tmp_path / "other.csv").write_text("v,y\n1,2\n")
    with pytest.raises(exc, match=match):
        load_data(load_problem(_problem(tmp_path, data_lines)))


def test_shipped_diabetes_csv_is_scikit_learns_data():
    """problems/data/diabetes.csv holds scikit-learn's raw diabetes data, value for value."""
    sk = pytest.importorskip("sklearn.datasets")
    bunch = sk.load_diabetes(as_frame=False, scaled=False)
    ds = load_data(load_problem(REPO / "problems" / "diabetes_csv.toml"))
    train, test = ds
    assert (train.m, test.m, train.p) == (354, 88, 10)
    full = load_file(REPO / "problems" / "data" / "diabetes.csv", target="y")
    np.testing.assert_array_equal(full.U, bunch.data.T)
    np.testing.assert_array_equal(full.Y, bunch.target[None, :])
    assert list(full.info["inputs"]) == list(bunch.feature_names)


def test_diabetes_example_beats_a_constant_predictor(tmp_path):
    """The shipped example runs end to end (fenchel-idl run) and its held-out RMSE is
    clearly below that of predicting the training mean."""
    from fenchel_idl.apps.run import run_problem

    _, summary = run_problem(REPO / "problems" / "diabetes_csv.toml", tmp_path / "out",
                             progress=False)
    spec = load_problem(REPO / "problems" / "diabetes_csv.toml")
    train, test = load_data(spec)
    constant = float(np.sqrt(np.mean((test.Y - train.Y.mean()) ** 2)))
    assert summary["test"]["rmse"] < 0.85 * constant
    assert summary["train"]["rmse"] < summary["start_train"]["rmse"]
    assert (tmp_path / "out" / "model.npz").is_file()


# -- [certify]: the global bound of fenchel-idl run --------------------------------------------

_CERTIFY_HEAD = 'name = "c"\n[data]\nsource = "cosine"\nm = 10\n[model]\nn = 1\n'


@pytest.mark.parametrize("table, want", [
    ("", {"global": False, "global_time_limit": 600.0, "global_gap": 0.01}),
    ("[certify]\n", {"global": False, "global_time_limit": 600.0, "global_gap": 0.01}),
    ("[certify]\nglobal = true\n", {"global": True, "global_time_limit": 600.0,
                                    "global_gap": 0.01}),
    ("[certify]\nglobal = true\nglobal_time_limit = 30\nglobal_gap = 0.001\n",
     {"global": True, "global_time_limit": 30, "global_gap": 0.001}),
])
def test_certify_table_and_its_defaults(tmp_path, table, want):
    path = tmp_path / "c.toml"
    path.write_text(_CERTIFY_HEAD + table)
    assert load_problem(path).certify == want


@pytest.mark.parametrize("table, match", [
    ('global = "true"', r"\[certify\] 'global' must be true or false; got .*str"),
    ("global = 1", r"\[certify\] 'global' must be true or false; got .*int"),
    ("global_time_limit = 0", r"\[certify\] 'global_time_limit' must be in \(0.0, inf\]; got 0"),
    ("global_time_limit = -5.0", r"'global_time_limit' must be in \(0.0, inf\]; got -5.0"),
    ('global_time_limit = "60"', r"\[certify\] 'global_time_limit' must be a number"),
    ("global_gap = 0.0", r"\[certify\] 'global_gap' must be in \(0.0, 1.0\); got 0.0"),
    ("global_gap = 1.0", r"\[certify\] 'global_gap' must be in \(0.0, 1.0\); got 1.0"),
    ("global_gap = true", r"\[certify\] 'global_gap' must be a number; got .*bool"),
    ("globl = true", (r"\[certify\] keys must be among \['global', 'global_gap', "
                     r"'global_time_limit'\]; got \['globl'\]")),
])
def test_certify_table_refuses_bad_values_naming_the_key(tmp_path, table, match):
    path = tmp_path / "c.toml"
    path.write_text(_CERTIFY_HEAD + "[certify]\n" + table + "\n")
    with pytest.raises(ValidationError, match=match) as err:
        load_problem(path)
    if "globl" not in table:  # a bad value names the file too
        assert str(path) in str(err.value)


def test_certify_must_be_a_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("certify = true\n" + _CERTIFY_HEAD)
    with pytest.raises(ValidationError, match=r"\[certify\] must be a table .*got certify = "
                                              r"True"):
        load_problem(path)


# -- [teacher]: a state-driven fit (fit_teacher) -------------------------------------------------

_TEACHER_HEAD = 'name = "t"\nseed = 2\n[data]\nsource = "digits"\nn = 200\n'


def _teacher_file(tmp_path, table, head=_TEACHER_HEAD):
    path = tmp_path / "t.toml"
    path.write_text(head + "[teacher]\n" + table + "\n")
    return path


def test_teacher_table_is_read_as_written(tmp_path):
    """Every key of fit_teacher (the MLP's and the fit's) is accepted with its TOML type; the
    spec holds the table as written and no BCD settings; the shipped example loads."""
    from fenchel_idl.drivers.problem_file import _TEACHER_KINDS
    from fenchel_idl.drivers.state_fit import FIT_KEYS, TEACHER_KEYS

    assert set(_TEACHER_KINDS) == set(TEACHER_KEYS) | set(FIT_KEYS)
    table = ('hidden = [8, 4]\nactivation = "tanh"\nmax_iter = 50\nalpha = 0\n'
             'learning_rate_init = 0.01\nbatch_size = 32\nkappa = 0.4\nl1_A = 0.01\n'
             'l1_B = 0\nreadout = "keep"\nsamples = 100\ntol = 1e-5\nzero_tol = 0.001\n'
             'on_failure = "warn"\nsolver = "CLARABEL"\nmethod = "fista"\nfit_max_iter = 7')
    spec = load_problem(_teacher_file(tmp_path, table))
    assert spec.teacher == {"hidden": [8, 4], "activation": "tanh", "max_iter": 50, "alpha": 0,
                            "learning_rate_init": 0.01, "batch_size": 32, "kappa": 0.4,
                            "l1_A": 0.01, "l1_B": 0, "readout": "keep", "samples": 100,
                            "tol": 1e-5, "zero_tol": 0.001, "on_failure": "warn",
                            "solver": "CLARABEL", "method": "fista", "fit_max_iter": 7}
    assert (spec.seed, spec.data, spec.model, spec.penalties, spec.refine) == (
        2, {"source": "digits", "n": 200}, {}, [], None)
    assert load_problem(_teacher_file(tmp_path, "hidden = 5")).teacher == {"hidden": 5}
    assert load_problem(_teacher_file(tmp_path, "")).teacher == {}
    shipped = load_problem(REPO / "problems" / "teacher_digits.toml")
    assert shipped.teacher["hidden"] == [32, 32] and shipped.teacher["kappa"] == 0.5
    # a BCD file has no [teacher]
    assert load_problem(REPO / "problems" / "digits.toml").teacher is None


@pytest.mark.parametrize("line, match", [
    ('kappa = "0.5"', r"\[teacher\] 'kappa' must be a number; got '0\.5' of type str"),
    ("kappa = 1.0", r"\[teacher\] 'kappa' must be in \(0\.0, 1\.0\); got 1\.0"),
    ("hidden = [8, 2.5]", r"\[teacher\] 'hidden'\[1\] must be an integer; got 2\.5 of type float"),
    ("hidden = [8, 0]", r"\[teacher\] 'hidden'\[1\] must be in \[1, inf\]; got 0"),
    ('hidden = "8"', r"\[teacher\] 'hidden' must be an integer or an array; got '8'"),
    ("hidden = []", r"\[teacher\] 'hidden' must be a positive integer or a nonempty list"),
    ("max_iter = 2.0", r"\[teacher\] 'max_iter' must be an integer; got 2\.0 of type float"),
    ("max_iter = 0", r"\[teacher\] 'max_iter' must be an integer in \[1, inf\]; got 0"),
    ("fit_max_iter = true", r"\[teacher\] 'fit_max_iter' must be an integer; got True"),
    ("l1_A = true", r"\[teacher\] 'l1_A' must be a number; got True of type bool"),
    ("l1_B = -0.1", r"\[teacher\] 'l1_B' must be in \[0\.0, inf\]; got -0\.1"),
    ("tol = 0.0", r"\[teacher\] 'tol' must be in \(0\.0, inf\]; got 0\.0"),
    ("alpha = -1", r"\[teacher\] 'alpha' must be in \[0\.0, inf\]; got -1"),
    ("learning_rate_init = 0", r"\[teacher\] 'learning_rate_init' must be in \(0\.0, inf\]"),
    ("batch_size = 0", r"\[teacher\] 'batch_size' must be an integer in \[1, inf\]; got 0"),
    ('activation = "softplus"', (r"\[teacher\] 'activation' must be one of \['identity', "
                                 r"'logistic', 'relu', 'tanh'\]; got 'softplus'")),
    ('readout = "labels"', r"\[teacher\] 'readout' must be one of \['keep', 'teacher'\]"),
    ('method = "adam"', r"\[teacher\] 'method' must be one of"),
    ('on_failure = "ignore"', r"\[teacher\] 'on_failure' must be one of"),
    ("solver = 3", r"\[teacher\] 'solver' must be a string; got 3 of type int"),
    ("samples = 0", r"\[teacher\] 'samples' must be an integer in \[1, inf\]; got 0"),
    ("zero_tol = 2.0", r"\[teacher\] 'zero_tol' must be in \[0\.0, 1\.0\]; got 2\.0"),
    ("hiden = [8]\nlr = 0.1\nkappa = 0.5", (r"\[teacher\] keys must be among \['activation', "
                                            r".*\]; got \['hiden', 'lr'\]")),
])
def test_teacher_table_refuses_bad_values_naming_file_table_and_key(tmp_path, line, match):
    path = _teacher_file(tmp_path, line)
    with pytest.raises(ValidationError, match=match) as err:
        load_problem(path)
    assert str(err.value).startswith(f"problem file {str(path)!r}: [teacher] ")


def test_teacher_must_be_a_table(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("teacher = [32]\n" + _TEACHER_HEAD)
    with pytest.raises(ValidationError, match=r"\[teacher\] must be a table .*got teacher = "
                                              r"\[32\]"):
        load_problem(path)


@pytest.mark.parametrize("section, text, said", [
    ("model", "[model]\nn = 3\n", "[teacher] hidden"),
    ("training", "[training]\nmax_sweeps = 3\n", "not by BCD"),
    ("schedule", "[schedule]\nline_search = true\n", "not by BCD"),
    ("minibatch", "[minibatch]\nbatch_size = 10\n", "not by BCD"),
    ("refine", "[refine]\nepochs = 3\n", "no gradient refinement"),
    ("[penalties]", '[[penalties]]\nname = "l1"\nweight = 0.1\non = "A"\n', "l1_A and l1_B"),
    ("solver", '[solver]\non_failure = "warn"\n', "[teacher] solver"),
    ("certify", "[certify]\nglobal = false\n", "global bound is for BCD"),
    ("demo", "[demo]\n", "demos train by BCD"),
])
def test_teacher_refuses_the_sections_a_state_fit_would_ignore(tmp_path, section, text, said):
    """Every BCD section beside [teacher] is refused, named, with where its setting goes;
    even an empty one (it would be silently ignored)."""
    path = tmp_path / "t.toml"
    path.write_text(_TEACHER_HEAD + text + "[teacher]\nhidden = [4]\n")
    with pytest.raises(ValidationError) as err:
        load_problem(path)
    message = str(err.value)
    assert message.startswith(f"problem file {str(path)!r} has a [teacher] table")
    assert f"and [{section}], which a state fit does not use; remove it" in message
    assert said in message


def test_teacher_names_every_refused_section_and_checks_data(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(_TEACHER_HEAD + "[model]\nn = 3\n[refine]\n[teacher]\n")
    with pytest.raises(ValidationError, match=r"and \[model\], \[refine\], which a state fit "
                                              r"does not use; remove them"):
        load_problem(path)
    path.write_text('[data]\nsource = "digit"\n[teacher]\n')
    with pytest.raises(ValidationError, match=r"\[data\] 'source' must be one of"):
        load_problem(path)
    path.write_text('seed = -1\n[data]\nsource = "digits"\n[teacher]\n')
    with pytest.raises(ValidationError, match=r"'seed'"):
        load_problem(path)


def test_run_reports_start_and_result_in_one_metric(tmp_path):
    """A classification trained with the squared loss on one-hot labels: the summary gives
    the start's and the result's training accuracy (not the start's RMSE beside the
    result's accuracy), each equal to an independent count of correct argmax predictions."""
    from fenchel_idl.apps.run import run_problem

    path = tmp_path / "digits.toml"
    path.write_text('name = "digits_squared"\nseed = 0\n[data]\nsource = "digits"\n'
                    'test_fraction = 0.2\n[model]\nn = 5\n[training]\nloss = "squared"\n'
                    'max_sweeps = 1\n')
    result, summary = run_problem(path, None, progress=False)
    train, _ = load_data(load_problem(path))
    for key, model in (("start_train", result.start_model), ("train", result.model)):
        correct = np.argmax(model.predict(train.U), axis=0) == train.labels
        assert summary[key] == {"accuracy": pytest.approx(float(np.mean(correct)), abs=1e-12)}


@pytest.mark.parametrize("path", sorted((REPO / "problems").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_shipped_problem_file_loads(path):
    """Each problem file in problems/ passes every check of load_problem (no data loaded);
    its name is the file's stem."""
    spec = load_problem(path)
    assert spec.name == path.stem

