"""The results document: sections rewritten in place, and the generator in quick mode."""

from fenchel_idl.apps.common import read_section, write_section
from fenchel_idl.apps.results import main, regenerate


def test_write_section_replaces_its_own_section_only(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("# Measured results\n\nHand-written introduction.\n")
    write_section("a", "first A", path)
    write_section("b", "only B\ntwo lines", path)
    write_section("a", "second A\n", path)
    text = path.read_text()
    assert text.startswith("# Measured results\n\nHand-written introduction.\n")
    assert read_section("a", path) == "second A" and "first A" not in text
    assert read_section("b", path) == "only B\ntwo lines"
    assert text.count("<!-- begin results: a -->") == 1
    assert text.index("results: a") < text.index("results: b")  # a keeps its place
    assert read_section("c", path) is None and read_section("a", tmp_path / "none") is None


def test_quick_cosine_section_holds_the_figures_the_run_returned(tmp_path):
    path = tmp_path / "results.md"
    res = regenerate(["cosine"], path, quick=True, runs=tmp_path / "runs")["cosine"]
    text = read_section("cosine", path)
    assert text is not None and "Quick mode" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
            if line.startswith("| ")}
    bcd = next(v for k, v in rows.items() if k.startswith("BCD alone"))
    assert f"{res['bcd_train_rmse']:.3f} | {res['bcd_test_rmse']:.3f} | " \
           f"{res['bcd_grid_rmse']:.3f}" in bcd
    assert f"({res['bcd_sweeps']} sweeps" in bcd and res["bcd_sweeps"] == 2
    warm = next(v for k, v in rows.items() if k.startswith("BCD, then"))
    assert f"| {res['warm_train_rmse']:.3f} |" in warm
    # BCD starts from the random-feature start and never ends above it
    assert res["bcd_train_rmse"] <= res["start_train_rmse"] + 1e-12
    assert (tmp_path / "runs" / "cosine" / "warm_vs_random.png").is_file()


def test_command_line_rewrites_the_section_in_place(tmp_path):
    path = tmp_path / "results.md"
    for _ in range(2):
        assert main(["--quick", "--only", "cosine", "--out", str(path),
                     "--runs", str(tmp_path / "runs")]) == 0
    assert path.read_text().count("<!-- begin results: cosine -->") == 1
