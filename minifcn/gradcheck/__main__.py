"""``python -m minifcn.gradcheck``: check every op's backward against central differences.

Prints one row per case of ``minifcn.opcases.CASES`` (op, shapes, worst relative error,
pass/fail) and exits with status 1 if any case fails. The function behind it is
``minifcn.gradcheck(fn, inputs)``, in ``minifcn/gradcheck/__init__.py``.
"""
import argparse
import sys

from . import run_cases


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minifcn.gradcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    args = parser.parse_args(argv)
    return 1 if run_cases(seed=args.seed) else 0


if __name__ == "__main__":
    sys.exit(main())
