"""Regenerate the results document ``docs/results.md`` in one command.

::

    python -m fenchel_idl.apps.results [--quick] [--only SECTION ...] [--out FILE] [--runs DIR]

Each section of the document is written by one command, which rewrites only the text between
its marker comments (:func:`fenchel_idl.apps.common.write_section`):

- ``cosine``: ``python -m fenchel_idl.apps.bench_refine --results FILE``, the cosine problem
  file by BCD and refinement against refinement from a random start;
- ``experiments``: ``python -m fenchel_idl.apps.experiments --results FILE``, the summary
  table of the experiments of section 7 (without the MNIST-size ones, which ``--full`` adds)
  and, for each experiment, its four implicit models measured in the same run (random-feature
  start, BCD alone, BCD + refinement, refinement from a random start) with test figures,
  wall times and the relaxation gap of the BCD model;
- ``bench``: ``fenchel-idl bench --results FILE``, the benchmark ratios.

This command runs them in turn. ``--quick`` runs each in its quick mode (a check that the
pipeline works; the sections say so), and is meant with ``--out`` pointing elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fenchel_idl.apps.bench import benchmark
from fenchel_idl.apps.bench_refine import cosine_section, warm_vs_random
from fenchel_idl.apps.common import RESULTS_PATH, write_section
from fenchel_idl.apps.experiments import EXPERIMENTS, run_experiments

__all__ = ["SECTIONS", "main", "regenerate"]

#: The sections of the results document, in the order they are regenerated.
SECTIONS = ("cosine", "experiments", "bench")


def regenerate(sections: Sequence[str] = SECTIONS, path: str | Path | None = None, *,
               quick: bool = False, runs: str | Path = "runs/results") -> dict[str, Any]:
    """Run the commands of ``sections`` and rewrite their sections of the results document
    ``path`` (default :data:`fenchel_idl.apps.common.RESULTS_PATH`); their plots and reports
    go under ``runs``. Returns each command's results by section name."""
    path = RESULTS_PATH if path is None else Path(path)
    runs = Path(runs)
    flag = " --quick" if quick else ""
    out: dict[str, Any] = {}
    if "cosine" in sections:
        res = warm_vs_random(runs / "cosine", quick=quick)
        command = f"python -m fenchel_idl.apps.bench_refine {runs / 'cosine'}{flag}"
        write_section("cosine", cosine_section(res, command), path)
        out["cosine"] = res
    if "experiments" in sections:
        mode = "quick" if quick else "default"
        names = [n for n, e in EXPERIMENTS.items() if quick or not e.long]
        command = f"python -m fenchel_idl.apps.experiments --out {runs / 'experiments'}{flag}"
        out["experiments"], _ = run_experiments(names, mode=mode, out=runs / "experiments",
                                                command=command, results_path=path)
    if "bench" in sections:
        command = f"fenchel-idl bench --out {runs / 'bench'}{flag}"
        out["bench"] = benchmark(quick, str(runs / "bench"), path, command)
    return out


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``fenchel-idl results`` (also ``python -m fenchel_idl.apps.results``); returns the exit
    status. ``prog`` names the command in its help."""
    parser = argparse.ArgumentParser(prog=prog or "python -m fenchel_idl.apps.results",
                                     description="Regenerate the results document.")
    parser.add_argument("--quick", action="store_true",
                        help="every command in its quick mode (a pipeline check)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        metavar="SECTION", help=f"only these sections ({', '.join(SECTIONS)})")
    parser.add_argument("--out", default=None,
                        help=f"the results document (default: {RESULTS_PATH})")
    parser.add_argument("--runs", default="runs/results",
                        help="directory for the commands' plots and reports")
    args = parser.parse_args(argv)
    regenerate(args.only, args.out, quick=args.quick, runs=args.runs)
    print(f"wrote {RESULTS_PATH if args.out is None else args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
