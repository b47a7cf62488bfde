"""Command line: ``fenchel-idl run PROBLEM.toml --out DIR`` and ``fenchel-idl bench``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from fenchel_idl.apps.bench import benchmark
from fenchel_idl.apps.run import run_problem
from fenchel_idl.drivers import checkpoint_sweep, load_problem
from fenchel_idl.errors import FenchelIDLError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fenchel-idl", description=(
        "Train implicit models by block-coordinate descent on the Fenchel-relaxed problem."))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a problem file and write model, history, "
                                     "certificate and plots")
    run.add_argument("problem", help="a TOML problem file (see problems/)")
    run.add_argument("--out", default=None, help="output directory (default: runs/<name>)")
    run.add_argument("--checkpoint", default=None, help="checkpoint directory (written after "
                                                        "every sweep)")
    run.add_argument("--resume", action="store_true", help="resume from --checkpoint")
    run.add_argument("--max-sweeps", type=int, default=None,
                     help="override max_sweeps (the epochs, with [minibatch])")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    bench = sub.add_parser("bench", help="benchmarks: ratios against baselines run in the "
                                         "same process")
    bench.add_argument("--quick", action="store_true", help="small sizes only")
    bench.add_argument("--out", default=None, help="directory for the scaling plot")
    bench.add_argument("--results", default=None,
                       help="results document whose 'bench' section to rewrite "
                            "(docs/results.md)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            out = args.out or str(Path("runs") / load_problem(args.problem).name)
            result, summary = run_problem(args.problem, out, progress=not args.quiet,
                                          checkpoint=args.checkpoint, resume=args.resume,
                                          max_sweeps=args.max_sweeps)
            print(result.certificate)
            print(f"start (random features): {summary['start_train']}   trained: "
                  f"{summary['train']}" + (f"   test: {summary['test']}" if "test" in summary
                                           else ""))
            print(f"{result.n_sweeps} sweeps in {summary['time_s']:.1f} s; wrote "
                  + ", ".join(summary["written"]))
        else:
            command = "fenchel-idl bench" + (" --quick" if args.quick else "")
            benchmark(args.quick, args.out, args.results, command)
    except FenchelIDLError as exc:
        print(f"fenchel-idl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(_interrupt_message(exc, args), file=sys.stderr)
        return 130
    return 0


def _interrupt_message(exc: KeyboardInterrupt, args: argparse.Namespace) -> str:
    """One line for Ctrl-C: where the run stopped, which checkpoint is on disk, and the
    command that resumes it. The checkpoint is read back from disk, so the line is right
    whatever was running (data loading, a sweep, a checkpoint write, the refinement)."""
    if args.command != "run":
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
    cmd += ["--max-sweeps", str(args.max_sweeps)] if args.max_sweeps else []
    cmd += ["--quiet"] if args.quiet else []
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
