"""Logs that read well when output is redirected (issue 25, item 4).

Each test runs in a subprocess whose stderr and stdout are files, as a user's redirected run
is: tqdm then finds no terminal, and output printed by C code (a solver's banner) is caught
too, which an in-process capture of ``sys.stdout`` would miss.
"""

import json
import re
import subprocess
import sys
import textwrap

import pytest

# the main job as ``fenchel-idl run`` runs it, with the tool's logging: INFO lines, plain, on
# stderr (the library itself adds no handler)
MAIN_JOB = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from fenchel_idl.apps.run import run_problem
    run_problem(sys.argv[1], sys.argv[2], progress=sys.argv[3] == "progress")
""")

TINY = textwrap.dedent("""
    name = "tiny"
    seed = 0
    [data]
    source = "cosine"
    m = 40
    [model]
    n = 6
    kappa = 0.5
    [training]
    lam = 30.0
    max_sweeps = 6
""")

FULL_BATCH = TINY + "[refine]\nepochs = 30\nlr = 0.001\n"
MINIBATCH = TINY + "[minibatch]\nbatch_size = 20\nepochs = 3\n"


def _run(tmp_path, script, *args):
    """Run ``script`` in a fresh interpreter with stdout and stderr sent to files; return
    (stdout, stderr) as bytes."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        subprocess.run([sys.executable, "-c", script, *map(str, args)], stdout=fo, stderr=fe,
                       stdin=subprocess.DEVNULL, check=True, timeout=600)
    return out.read_bytes(), err.read_bytes()


@pytest.mark.parametrize("problem, per_sweep", [
    (FULL_BATCH, r"BCD: sweep (\d+)/6: objective \S+, loss \S+, \S+ s"),
    (MINIBATCH, r"mini-batch BCD: epoch (\d+)/3: majorizer H \S+, relaxed objective J \S+, \S+ s"),
    (MINIBATCH + 'steps = "stochastic"\n',
     r"mini-batch BCD: epoch (\d+)/3: last batch's J_S \S+, relaxed objective J \S+, \S+ s"),
], ids=["solve_bcd", "solve_bcd_minibatch", "solve_bcd_minibatch_stochastic"])
def test_main_job_writes_one_line_per_sweep_to_a_redirected_stderr(tmp_path, problem,
                                                                     per_sweep):
    """Asked for progress with stderr redirected to a file, the main job writes no progress
    bar (no carriage returns) but one log line per sweep (or epoch), numbered 1, 2, ...,
    and a few kilobytes in all (a bar wrote about 100 KB for the cosine problem)."""
    path = tmp_path / "tiny.toml"
    path.write_text(problem)
    _, err = _run(tmp_path, MAIN_JOB, path, tmp_path / "out", "progress")
    assert b"\r" not in err
    assert len(err) <= 4096, err.decode()
    text = err.decode()
    sweeps = [int(m.group(1)) for m in re.finditer(per_sweep, text)]
    n_sweeps = json.loads((tmp_path / "out" / "summary.json").read_text())["n_sweeps"]
    assert sweeps == list(range(1, n_sweeps + 1)), text
    if problem is FULL_BATCH:
        assert re.search(r"^BCD: stopped after \d+ sweeps: \S", text, re.MULTILINE), text
        epochs = re.findall(r"^refine: epoch (\d+)/30:", text, re.MULTILINE)
        assert 1 <= len(epochs) <= 11 and epochs[-1] == "30", text
    else:
        assert "mini-batch BCD: final readout: " in text


def test_main_job_without_progress_logs_no_progress_lines(tmp_path):
    """progress=False (``fenchel-idl --quiet``): no bar and no progress line."""
    path = tmp_path / "tiny.toml"
    path.write_text(FULL_BATCH)
    _, err = _run(tmp_path, MAIN_JOB, path, tmp_path / "out", "quiet")
    assert not re.search(rb"^(BCD|refine):", err, re.MULTILINE), err.decode()
    assert b"\r" not in err


LP_BOUNDS = textwrap.dedent("""
    import logging, sys
    import numpy as np
    if sys.argv[1] == "debug":
        logging.getLogger("fenchel_idl").setLevel(logging.DEBUG)
    from fenchel_idl.analysis import lp_bound
    from fenchel_idl.drivers import init_random
    model = init_random(p=3, q=1, n=6, kappa=0.5, seed=0)
    for solver in (None, "HIGHS", "CLARABEL"):
        for relaxation in ("paper", "triangle"):
            lp_bound(model, np.zeros(3), 0.1, c=np.ones(6), relaxation=relaxation,
                     solver=solver)
""")


def test_lp_bounds_print_nothing_at_the_default_level(tmp_path):
    """The LP bounds of the robustness module print nothing, not even HiGHS's banner
    (written by C code), unless the fenchel_idl logger is at DEBUG; at DEBUG the solvers
    talk."""
    pytest.importorskip("highspy")
    out, err = _run(tmp_path, LP_BOUNDS, "default")
    assert out == b"" and err == b"", (out + err).decode()
    out, _ = _run(tmp_path, LP_BOUNDS, "debug")
    assert b"HiGHS" in out
