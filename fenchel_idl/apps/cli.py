"""The command-line tool ``fenchel-idl``: one command, a subcommand per application.

::

    fenchel-idl [--verbose | --quiet] COMMAND [options]
    fenchel-idl COMMAND --help

================  ================================================================
command           what it does (module, also run as ``python -m fenchel_idl.apps.X``)
================  ================================================================
``run``           train a problem file; write model, history, certificate and plots
                  (the main job; :mod:`~fenchel_idl.apps.run`, this module)
``experiments``   the experiments of section 7 with their baselines
                  (:mod:`~fenchel_idl.apps.experiments`)
``demos``         feature selection, row sparsity, low rank and robust training
                  (:mod:`~fenchel_idl.apps.demos`)
``attacks``       the attacks of section 7.3, Table 1 (:mod:`~fenchel_idl.apps.table1`)
``bench``         benchmarks against baselines run in the same process
                  (:mod:`~fenchel_idl.apps.bench`)
``bench-refine``  the cosine problem: BCD and refinement against refinement from a
                  random start (:mod:`~fenchel_idl.apps.bench_refine`)
``results``       regenerate the results document ``docs/results.md``
                  (:mod:`~fenchel_idl.apps.results`)
================  ================================================================

Each subcommand's ``--help`` lists its own options. ``--verbose`` and ``--quiet`` come
before the subcommand (``run`` also takes them after it). They set the level of the
``fenchel_idl`` logger, to which the library writes everything that is not a progress bar:
INFO by default, WARNING with ``--quiet`` (which also turns the progress bars off), DEBUG
with ``--verbose``. The tool adds the one handler, a plain one on stderr; the library itself
never configures logging.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fenchel_idl.apps import bench, bench_refine, demos, experiments, results, table1
from fenchel_idl.apps.common import configure_logging, problems_dir
from fenchel_idl.apps.run import MANIFEST, default_out, run_problem
from fenchel_idl.drivers import StateFit, checkpoint_sweep, load_problem
from fenchel_idl.errors import FenchelIDLError

__all__ = ["COMMANDS", "configure_logging", "main"]

#: The subcommands other than ``run``: name -> (one-line help, the application's
#: ``main(argv, prog)``, which parses the rest of the command line itself).
COMMANDS: dict[str, tuple[str, Callable[..., int]]] = {
    "experiments": ("the experiments of section 7 with their baselines; writes report.md",
                    experiments.main),
    "demos": ("feature selection, row sparsity, low rank and robust training on the digits",
              demos.main),
    "attacks": ("the attacks of section 7.3 on MNIST and Fashion-MNIST (Table 1)",
                table1.main),
    "bench": ("benchmarks: ratios against baselines run in the same process", bench.main),
    "bench-refine": ("the cosine problem: BCD and refinement against refinement alone",
                     bench_refine.main),
    "results": ("regenerate the results document (docs/results.md)", results.main),
}

_RUN_HELP = ("train a problem file (or fit its [teacher]); write model, history, certificate "
             "and plots")

def _add_log_flags(parser: argparse.ArgumentParser, quiet_help: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true",
                       help="debug messages and the solvers' own output")
    group.add_argument("-q", "--quiet", action="store_true", help=quiet_help)


def _tool_parser() -> argparse.ArgumentParser:
    helps = {"run": _RUN_HELP, **{name: text for name, (text, _) in COMMANDS.items()}}
    width = max(map(len, helps))
    lines = [f"  {name:<{width}}  {text}" for name, text in helps.items()]
    parser = argparse.ArgumentParser(
        prog="fenchel-idl", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Implicit deep learning through convex optimization: train implicit\n"
                    "models by block-coordinate descent on the Fenchel-relaxed problem.",
        epilog="commands:\n" + "\n".join(lines) + "\n\n'fenchel-idl COMMAND --help' lists "
               "the options of a command.\n--verbose and --quiet go before the command ('run' "
               "also takes them after it).")
    _add_log_flags(parser, "warnings and errors only; no progress bars")
    parser.add_argument("command", nargs="?", choices=("run", *COMMANDS), metavar="COMMAND",
                        help="the command (listed below)")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="...",
                        help="the options of the command")
    return parser


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fenchel-idl run",
        description="Train the problem of a problem file by BCD (and its refinement stage) "
                    "and write model, history, certificate and plots: the main job. A problem "
                    "file with a [teacher] table trains that MLP and fits an implicit model to "
                    "its hidden states instead, one certified convex program per state.")
    parser.add_argument("problem", help="a TOML problem file, or the name of one shipped with "
                                        f"the package (cosine_regression, ... in "
                                        f"{problems_dir()})")
    parser.add_argument("--out", default=None,
                        help="output directory (default: runs/<name>, the problem file's "
                             "'name'). Checked before training: it must be new, empty or hold "
                             "only an earlier run's results, which are replaced (no stale "
                             f"file stays); {MANIFEST} is written last and marks a complete "
                             "set")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out directory that holds other files too (they "
                             "are left alone)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint directory (written after every sweep; one run at a "
                             "time may use it)")
    parser.add_argument("--resume", action="store_true",
                        help="resume from --checkpoint; refused when the problem file's data, "
                             "model or settings differ from those it was written with "
                             "(--max-sweeps and [refine] may change)")
    parser.add_argument("--max-sweeps", type=int, default=None,
                        help="override max_sweeps (the epochs, with [minibatch])")
    _add_log_flags(parser, "no progress bar; warnings and errors only")
    return parser


def _problem_path(given: str) -> str:
    """``given`` when it is a file; else the shipped problem file of that name (with or
    without ``.toml``) when there is one; else ``given`` (whose loading then fails with a
    message naming it)."""
    if Path(given).is_file() or Path(given).name != given:
        return given
    for name in (given, given + ".toml"):
        if (problems_dir() / name).is_file():
            return str(problems_dir() / name)
    return given


def main(argv: Sequence[str] | None = None) -> int:
    """``fenchel-idl``; returns the exit status (argparse exits on bad usage or ``--help``)."""
    parser = _tool_parser()
    tool = parser.parse_args(argv)
    if tool.command is None:
        parser.error(f"name a command: {', '.join(('run', *COMMANDS))}")
    if tool.command != "run":
        configure_logging(tool.verbose, tool.quiet)
        rest = list(tool.args)
        if (tool.command in ("demos", "experiments") and tool.quiet
                and "--no-progress" not in rest):
            rest.append("--no-progress")
        return _guarded(lambda: COMMANDS[tool.command][1](rest, prog=f"fenchel-idl "
                                                                     f"{tool.command}"),
                        tool.command, None)
    args = _run_parser().parse_args(tool.args)
    args.verbose = args.verbose or tool.verbose
    args.quiet = (args.quiet or tool.quiet) and not args.verbose
    configure_logging(args.verbose, args.quiet)
    return _guarded(lambda: _run(args), "run", args)


def _guarded(command: Callable[[], int | None], name: str,
             run_args: argparse.Namespace | None) -> int:
    """Run ``command``; a package error becomes one line and status 2, Ctrl-C status 130."""
    try:
        return command() or 0
    except FenchelIDLError as exc:
        where = "" if name == "run" else f" {name}"
        print(f"fenchel-idl{where}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(_interrupt_message(exc, run_args), file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    """``fenchel-idl run``: train, print the certificate and the metrics."""
    args.problem = _problem_path(args.problem)
    out = args.out or str(default_out(load_problem(args.problem)))
    result, summary = run_problem(args.problem, out, progress=not args.quiet,
                                  checkpoint=args.checkpoint, resume=args.resume,
                                  max_sweeps=args.max_sweeps, overwrite=args.overwrite)
    if isinstance(result, StateFit):
        _report_fit(result, summary)
    else:
        print(result.certificate)
        print(f"start (random features): {summary['start_train']}   trained: "
              f"{summary['train']}" + (f"   test: {summary['test']}" if "test" in summary
                                       else ""))
        print(f"{result.n_sweeps} sweeps in {summary['time_s']:.1f} s; wrote "
              + ", ".join(summary["written"]))
    return 0


def _report_fit(fit: StateFit, summary: dict) -> None:
    """What ``run`` prints for a ``[teacher]`` problem: the certificate's head (without the
    line per row, which certificate.txt holds), the teacher's and the fitted model's metrics,
    the time and the files."""
    print(fit.certificate_text(rows=False))
    for data in ("train", "test"):
        if data in summary:
            (name, teacher), = summary["teacher_" + data].items()
            print(f"{data} {name}: teacher {teacher:.4f}, fitted {summary[data][name]:.4f}")
    print(f"{summary['rows_certified']}/{summary['n_states']} rows certified, "
          f"A {summary['zeros_A']:.1%} zeros; {summary['time_s']:.1f} s (teacher "
          f"{summary['teacher_time_s']:.1f} s, fit {summary['fit_time_s']:.1f} s); wrote "
          + ", ".join(summary["written"]))


def _interrupt_message(exc: KeyboardInterrupt, args: argparse.Namespace | None) -> str:
    """One line for Ctrl-C: where the run stopped, which checkpoint is on disk, and the
    command that resumes it. The checkpoint is read back from disk, so the line is right
    whatever was running (data loading, a sweep, a checkpoint write, the refinement)."""
    if args is None:
        return "fenchel-idl: interrupted."
    phase = getattr(exc, "phase", None)
    epoch = getattr(exc, "epoch", None)
    where = {"start": " while starting (initial equilibrium and readout, before any sweep)",
             "bcd": f" after {getattr(exc, 'sweeps', '?')} completed sweep(s)",
             "readout": " in the final readout",
             "refine": " in the refinement stage" + (f" (epoch {epoch})" if epoch else ""),
             }.get(phase, "")
    if args.checkpoint is None:
        return (f"fenchel-idl: interrupted{where}; no checkpoint was kept (run with "
                "--checkpoint DIR to be able to resume).")
    cmd = ["fenchel-idl", "run", args.problem, "--checkpoint", args.checkpoint, "--resume"]
    cmd += ["--out", args.out] if args.out else []
    cmd += ["--overwrite"] if getattr(args, "overwrite", False) else []
    cmd += ["--max-sweeps", str(args.max_sweeps)] if args.max_sweeps is not None else []
    cmd += ["--quiet"] if args.quiet else []
    cmd += ["--verbose"] if args.verbose else []
    saved = checkpoint_sweep(args.checkpoint)
    if saved is None:
        return (f"fenchel-idl: interrupted{where}; no checkpoint had been written to "
                f"{args.checkpoint!r} yet; start again with: {shlex.join(cmd)}")
    note = ""
    if phase == "refine":
        note = " (refinement keeps no checkpoint: resuming redoes the readout and refinement)"
    elif phase == "readout":
        note = " (resuming redoes the final readout)"
    return (f"fenchel-idl: interrupted{where}; the last checkpoint, after sweep {saved}, is in "
            f"{args.checkpoint!r}{note}; resume with: {shlex.join(cmd)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
