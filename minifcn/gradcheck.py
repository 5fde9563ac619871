"""``python -m minifcn.gradcheck``: check every op's backward against central differences.

Prints one row per case of ``minifcn.opcases.CASES`` (op, shapes, worst relative error,
pass/fail) and exits with status 1 if any case fails.

This module is the command only. The function of the same name, ``minifcn.gradcheck(fn,
inputs)``, lives in ``minifcn/gradient_check.py``; importing this module would make the name
``minifcn.gradcheck`` point to the module instead of the function, so it refuses to be imported.
"""
import argparse
import sys

if __name__ != "__main__":
    raise ImportError("minifcn.gradcheck is the command `python -m minifcn.gradcheck`, not a "
                      "module to import; the function is minifcn.gradcheck (from "
                      "minifcn.gradient_check import gradcheck, run_cases)")

from minifcn.gradient_check import run_cases  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minifcn.gradcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    args = parser.parse_args(argv)
    return 1 if run_cases(seed=args.seed) else 0


sys.exit(main())
