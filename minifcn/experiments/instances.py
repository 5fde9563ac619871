"""Instances from FCN-8s, three ways, in miniature: the semantic FCN-8s and the connected
components of each class (the baseline a user tries first), FCN-8s with an embedding head and
the discriminative loss, and FCN-8s with centre and offset heads (models/instances.py).

    python -m minifcn.experiments.instances --iters 500 --seeds 3 --jobs 2

Each is trained on 96x96 ``shapes-touching`` (scenes where objects of one class touch or
overlap: docs/data.md) from the shipped classifier, with the same recipe, 500 steps and seeds
0, 1, 2, then scored on the validation images of ``shapes`` (objects mostly apart) and of
``shapes-touching``, where connected components must merge what touches: panoptic quality
(PQ = SQ x RQ, ``minifcn.metrics.panoptic_quality``; background is stuff), mean IU of the
semantic part, and time per training step (``compare.run``). Figures: each method's instances
on the same touching scenes (OUT/instances.png, --figure), and for the embedding net the
pixels' 2-D embeddings coloured by their true instance, at the classifier start and after
training (OUT/embeddings.png, --embedding-figure).
"""
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from .. import Tensor, backend, no_grad, training
from ..data import Loader, to_input
from ..models.instances import instances_of
from ..training import validate_instances
from . import compare, options

ROWS = (("fcn8s", "classifier"), ("fcn8s-embed", "classifier"), ("fcn8s-centres", "classifier"))
LABELS = {"fcn8s": "FCN-8s + connected components", "fcn8s-embed": "FCN-8s + embedding",
          "fcn8s-centres": "FCN-8s + centres and offsets"}
SPLITS = ("shapes", "shapes-touching")


def panoptic(run_dir, spec, config):
    """Panoptic quality of the run's best checkpoint on the validation split of ``spec``."""
    model, _ = training.load_model(Path(run_dir) / training.BEST)
    data = training.dataset(config, "val", spec)
    loader = Loader(data, 16, shuffle=False, group_by_size=True, instances=True)
    return validate_instances(model, loader, data.n_class)


def figure(rows, config, path, n_images=4):
    """Each method's instances (first seed) on the first touching validation scenes."""
    import matplotlib

    matplotlib.use("Agg")
    from ..viz import colorize

    data = training.dataset(config, "val", "shapes-touching")
    items = [data.item(i, instances=True) for i in range(n_images)]
    x = np.stack([to_input(im) for im, _, _ in items])

    def paint(ids):  # ids in colours (0: black), cycling through the palette
        return colorize(np.where(ids > 0, (ids - 1) % 254 + 1, 0).astype(np.uint8))

    grid = [("image", [im for im, _, _ in items]), ("true instances", [paint(t) for *_, t in items])]
    for r in rows:
        model, _ = training.load_model(Path(r["runs"][0]) / training.BEST)
        grid.append((r["label"].replace("FCN-8s + ", ""), [paint(i) for i in instances_of(model, x)[1]]))
    compare.grid(grid, path, size=1.4)


def embedding_figure(run_dir, config, path, image=0):
    """The embedding net's 2-D pixel embeddings of one touching scene, coloured by true
    instance: at the start (the classifier's trunk, a fresh head: the run's own seed) and
    after training (its best checkpoint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viz import voc_palette

    im, _, true = training.dataset(config, "val", "shapes-touching").item(image, instances=True)
    backend.manual_seed(config["seed"])
    start = training.build_model({**config, "n_class": 5})
    training.load_weights_into(start, training.build.shipped_classifier(config["width"]),
                               log=lambda *a: None)
    trained, _ = training.load_model(Path(run_dir) / training.BEST)
    keep = (true > 0) & (true != 255)
    colours = voc_palette()[np.where(keep, (true - 1) % 254 + 1, 0)][keep] / 255
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax, (title, model) in zip(axes, (("start", start), ("trained", trained))):
        with no_grad():
            _, extra = model.eval().heads(Tensor(to_input(im)[None]))
        e = backend.as_numpy(extra.data)[0]
        ax.scatter(e[0][keep], e[1][keep], c=colours, s=2)
        ax.set_title(f"embeddings, {title}", fontsize=8)
    compare.save(fig, path)


def _pq(r, split):
    values = [100 * v["pq"] for v in r[split]]
    spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.1f}{spread}"


def per_class_table(rows, split, class_names):
    """PQ, SQ, RQ of each class (mean over the seeds) on ``split``, a row per method."""
    head = ["method"] + [f"{n} PQ / SQ / RQ" for n in class_names]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        cells = [r["label"]]
        for c in range(len(class_names)):
            parts = []
            for k in ("pq", "sq", "rq"):
                v = [s["per_class"][k][c] for s in r[split]]
                v = [x for x in v if not np.isnan(x)]
                parts.append(f"{100 * statistics.fmean(v):.0f}" if v else "-")
            cells.append(" / ".join(parts))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plain(v):
    """``v`` with NumPy's arrays and scalars as lists and numbers, for JSON."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v


def main(argv=None):
    p = compare.parser("python -m minifcn.experiments.instances", __doc__, "runs/instances",
                       list(LABELS))
    p.add_argument("--embedding-figure", help="where to draw the embeddings (default "
                   "OUT/embeddings.png)")
    args = p.parse_args(argv)
    fig = args.figure or Path(args.out) / "instances.png"
    embeddings = args.embedding_figure or Path(args.out) / "embeddings.png"
    nets = compare.check(p, args, LABELS)
    figures = [(fig, "--figure")] + ([(embeddings, "--embedding-figure")]
                                     if "fcn8s-embed" in nets else [])
    rows = compare.run(args, [(m, s) for m, s in ROWS if m in nets], LABELS,
                       data="shapes-touching", outputs=figures)
    for r in rows:
        for split in SPLITS:
            r[split] = [panoptic(d, split, c) for d, c in zip(r["runs"], r["configs"])]
    config = rows[0]["configs"][0]
    made = [fig]
    figure(rows, config, made[0])
    for r in rows:
        if r["model"] == "fcn8s-embed":
            made.append(embeddings)
            embedding_figure(r["runs"][0], r["configs"][0], made[-1])
    names = training.dataset(config, "val").class_names
    print(f"\nshapes-touching {args.size}x{args.size} training, width {args.width}, "
          f"{args.iters} steps of batch {args.batch_size} from the classifier, seeds "
          f"0-{args.seeds - 1}; PQ on the validation images of each set:\n")
    print(compare.table(rows, [("PQ shapes", lambda r: _pq(r, "shapes")),
                               ("PQ touching", lambda r: _pq(r, "shapes-touching"))]))
    for split in SPLITS:
        print(f"\nper class on {split} (PQ / SQ / RQ, per cent, mean over the seeds; "
              f"background is stuff):\n")
        print(per_class_table(rows, split, names))
    options.write_text(Path(args.out, "table.json"), json.dumps(_plain(rows), indent=1))
    print(f"\nfigures: {', '.join(map(str, made))}; numbers: {Path(args.out) / 'table.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
