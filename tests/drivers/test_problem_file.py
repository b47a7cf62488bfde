"""Problem files (fenchel_idl.drivers.problem_file): the mapping to solve_bcd's keywords."""

import pytest


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
