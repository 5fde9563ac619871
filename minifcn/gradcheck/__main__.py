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
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (0 .. 2**32 - 1)")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # NumPy's seeds are unsigned 32-bit words
        parser.error(f"--seed must be an integer in 0..{2**32 - 1}, got {args.seed}")
    return 1 if run_cases(seed=args.seed) else 0


if __name__ == "__main__":
    sys.exit(main())
