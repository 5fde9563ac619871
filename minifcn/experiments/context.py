"""FCN-8s against the nets that widened its context: DeepLab (atrous convolution, ASPP) and
attention blocks inserted into FCN-8s (squeeze-and-excitation, non-local), in miniature.

    python -m minifcn.experiments.context --iters 500 --seeds 3 --jobs 2

Every net is trained on 96x96 ``shapes`` at the same --width from the shipped classifier (each
has VGG16's trunk), with the same recipe, data, 500 steps and seeds 0, 1, 2. The table gives
each net's mean IU (best validation, mean ± standard deviation over the seeds), parameters,
multiply-adds per image, and the time and peak memory of one training step
(``compare.run``). Two figures: every net's predictions on the same validation images
(OUT/predictions.png, --figure), and where FCN-8s's non-local block looks from one pixel: its
row of the attention matrix, over the image (OUT/attention.png, --attention-figure).
"""
import json
import sys
from pathlib import Path

import numpy as np

from .. import Tensor, no_grad, training
from ..data.transforms import to_input
from ..models.geometry import trace
from . import compare, options

ROWS = tuple((m, "classifier") for m in ("fcn8s", "deeplab-largefov", "deeplab-aspp",
                                         "fcn8s-se", "fcn8s-nonlocal"))
LABELS = {"fcn8s": "FCN-8s", "deeplab-largefov": "DeepLab-LargeFOV",
          "deeplab-aspp": "DeepLab-ASPP", "fcn8s-se": "FCN-8s + SE",
          "fcn8s-nonlocal": "FCN-8s + non-local"}


def attention_figure(run_dir, path, image=0):
    """The non-local block's attention from one pixel of a validation image: the pixel (the
    centre of its first object) and its row of the HW x HW matrix, drawn over the image at the
    pool4 cells' places."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viz import colorize

    model, config = training.load_model(Path(run_dir) / training.BEST)
    img, label = training.dataset(config, "val")[image]
    block = model.pool4_context
    block.keep_attention = True
    with no_grad():
        model(Tensor(to_input(img)[None]))
    steps = {s.name: s for s in trace(model, (1, 3) + label.shape)}
    pool4 = steps["pool4_context"]  # its cells: image x = jump * cell + shift
    h, w = pool4.shape[2:]
    ys, xs = np.nonzero(label != 0) if (label != 0).any() else np.nonzero(label == label)
    py, px = int(ys.mean()), int(xs.mean())  # the pixel: the centre of the objects' pixels
    cy, cx = (int(np.clip(round(float((v - pool4.shift) / pool4.jump)), 0, n - 1))
              for v, n in ((py, h), (px, w)))
    row = np.asarray(block.last_attention)[0, cy * w + cx].reshape(h, w)
    left = float(pool4.shift - pool4.jump / 2)
    extent = (left, left + float(pool4.jump) * w, left + float(pool4.jump) * h, left)
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax, (title, picture) in zip(axes, (("image", img), ("truth", colorize(label)))):
        ax.imshow(picture)
        ax.imshow(row, cmap="magma", alpha=0.6, extent=extent, interpolation="nearest")
        ax.plot([px], [py], "c+", markersize=12, mew=2)
        ax.set_xlim(-0.5, label.shape[1] - 0.5)
        ax.set_ylim(label.shape[0] - 0.5, -0.5)
        ax.set_title(f"{title}; attention from +", fontsize=8)
        ax.axis("off")
    compare.save(fig, path)


def main(argv=None):
    p = compare.parser("python -m minifcn.experiments.context", __doc__, "runs/context",
                       list(LABELS))
    p.add_argument("--attention-figure", help="where to draw the non-local block's attention "
                   "(default OUT/attention.png)")
    args = p.parse_args(argv)
    fig = args.figure or Path(args.out) / "predictions.png"
    attention = args.attention_figure or Path(args.out) / "attention.png"
    nets = compare.check(p, args, LABELS)
    figures = [(fig, "--figure")] + ([(attention, "--attention-figure")]
                                     if "fcn8s-nonlocal" in nets else [])
    rows = compare.run(args, [(m, s) for m, s in ROWS if m in nets], LABELS, outputs=figures)
    compare.figure([(r["label"], r["runs"][0]) for r in rows], rows[0]["configs"][0], fig)
    made = [fig]
    for r in rows:
        if r["model"] == "fcn8s-nonlocal":
            made.append(attention)
            attention_figure(r["runs"][0], made[-1])
    print(f"\nshapes {args.size}x{args.size}, width {args.width}, {args.iters} steps of batch "
          f"{args.batch_size} from the classifier, seeds 0-{args.seeds - 1}; time and memory at "
          f"batch {args.batch_size} on this machine:\n")
    print(compare.table(rows))
    options.write_text(Path(args.out, "table.json"), json.dumps(rows, indent=1))
    print(f"\nfigures: {', '.join(map(str, made))}; numbers: {Path(args.out) / 'table.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
