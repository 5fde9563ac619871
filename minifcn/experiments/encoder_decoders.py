"""FCN-8s against the encoder-decoders that followed it (SegNet, DeconvNet, U-Net), in miniature:
the same data, the same step budget and several seeds each.

    python -m minifcn.experiments.encoder_decoders --iters 500 --seeds 3 --jobs 2

Every net is trained on 96x96 ``shapes`` at the same --width, with train's recipe for its start:
from the shipped classifier where the net has VGG16's trunk (FCN-8s, SegNet, DeconvNet), and
from scratch for all (U-Net has no VGG16 trunk, so scratch only). Then, for each net:

- mean IU of the best validation, mean ± standard deviation over the seeds;
- boundary IU: mean IU over the validation pixels within --band pixels of a true edge
  (``minifcn.metrics.boundary_mask``), of each run's best checkpoint, mean over the seeds;
- parameters, and multiply-adds per image (from ``minifcn.summary``'s trace);
- time per training step (forward, loss, backward, SGD step; median of --steps after two
  warm-up steps) and the peak memory of one step (tracemalloc, NumPy's allocations: the
  activations kept for backward, the gradients), both at --batch-size on this machine.

Prints the markdown table of docs/experiments.md, writes each run under --out, the numbers to
OUT/table.json and one figure of every net's predictions on the same validation images to
OUT/predictions.png (--figure to write it elsewhere, e.g. docs/images/).
"""
import json
import statistics
import sys
from pathlib import Path

from . import compare, options
from .compare import boundary_iu

# (model, start) in table order; U-Net has no VGG16 trunk for a classifier's weights
ROWS = (("fcn8s", "classifier"), ("fcn8s", "scratch"), ("segnet", "classifier"),
        ("segnet", "scratch"), ("deconvnet", "classifier"), ("deconvnet", "scratch"),
        ("unet", "scratch"))
LABELS = {"fcn8s": "FCN-8s", "segnet": "SegNet", "deconvnet": "DeconvNet", "unet": "U-Net"}


def main(argv=None):
    p = compare.parser("python -m minifcn.experiments.encoder_decoders", __doc__,
                       "runs/encoder-decoders", list(LABELS))
    p.add_argument("--band", type=int, default=3, help="boundary IU: pixels within this many "
                   "of a true edge (3)")
    args = p.parse_args(argv)
    fig = args.figure or Path(args.out) / "predictions.png"
    nets = compare.check(p, args, LABELS)
    rows = compare.run(args, [(m, s) for m, s in ROWS if m in nets], LABELS,
                       outputs=[(fig, "--figure")])
    for r in rows:
        r["boundary"] = [boundary_iu(d, args.band, c) for d, c in zip(r["runs"], r["configs"])]
    compare.figure([(f"{r['label']} ({r['start']})", r["runs"][0]) for r in rows],
                   rows[0]["configs"][0], fig)
    print(f"\nshapes {args.size}x{args.size}, width {args.width}, {args.iters} steps of batch "
          f"{args.batch_size}, seeds 0-{args.seeds - 1}; boundary band {args.band} px; "
          f"time and memory at batch {args.batch_size} on this machine:\n")
    print(compare.table(rows, [("boundary IU",
                                lambda r: f"{100 * statistics.fmean(r['boundary']):.1f}")]))
    options.write_text(Path(args.out, "table.json"), json.dumps(rows, indent=1))
    print(f"\nfigure: {fig}; numbers: {Path(args.out) / 'table.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
