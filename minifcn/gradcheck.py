"""``python -m minifcn.gradcheck``: check every op's backward against central differences.

Prints one row per case of ``minifcn.opcases.CASES`` (op, shapes, worst relative error,
pass/fail) and exits with status 1 if any case fails. The function itself is
``minifcn.gradcheck`` (defined in ``minifcn.check``).
"""
import argparse
import sys
import types

import numpy as np

from .check import GradcheckError, gradcheck
from .opcases import CASES


def run(cases=CASES, seed=0, out=sys.stdout):
    """Check each case; print the table; return the number of failures."""
    rows, failures = [], 0
    for name, shapes, make in cases:
        fn, inputs = make(np.random.default_rng(seed))
        try:
            err = gradcheck(fn, inputs, return_error=True)
            rows.append((name, shapes, f"{err:.1e}", "pass"))
        except GradcheckError as e:
            failures += 1
            rows.append((name, shapes, "-", "FAIL"))
            print(e, file=sys.stderr)
    widths = [max(len(r[i]) for r in rows + [("op", "shapes", "worst rel. error", "")])
              for i in range(4)]
    header = ("op", "shapes", "worst rel. error", "result")
    for r in [header, tuple("-" * w for w in widths)] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)), file=out)
    print(f"\n{len(rows) - failures} passed, {failures} failed", file=out)
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minifcn.gradcheck", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    args = parser.parse_args(argv)
    return 1 if run(seed=args.seed) else 0


class _CallableModule(types.ModuleType):
    """Importing this module (``import minifcn.gradcheck``) makes Python set the package's
    ``gradcheck`` attribute to the module, hiding the function of the same name; calling the
    module calls the function, so ``minifcn.gradcheck(fn, inputs)`` works either way."""

    def __call__(self, *args, **kwargs):
        return gradcheck(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
