"""Study (a) of ``python -m minifcn.experiments.paper_ablations --study shift``: denser scores
from FCN-32s (filter rarefaction and shift-and-stitch, paper section 3.2) against the skip nets
FCN-16s and FCN-8s, mean IU against the cost per image (paper section 4.2: "the cost to
improvement ratio from this method [was] worse than layer fusion").

FCN-32s, FCN-16s and FCN-8s train with the same recipe, data, steps and seeds, all at one
conv1_1 padding: the skip study's (``common_pad1``: every net's coarse scores reach the whole
image), raised if needed to what rarefying two pools requires (105, see minifcn/models/shift.py).
Each seed's best checkpoints are then scored on the validation images in seven ways (METHODS):
FCN-32s as trained, rarefied at pool5 (stride 16) and at pool5 + pool4 (stride 8),
shift-and-stitch with f = 2 and f = 4 (the same strides, the weights of the same net), FCN-16s
and FCN-8s. Nothing is retrained for the denser methods: they reuse FCN-32s's weights.

Cost, per image (batch 1, inference, no gradient):
- work: multiply-adds of every layer, counted by ``geometry.trace`` (no timing): for
  shift-and-stitch, the f² copies (each a little larger, by its padding) up to score_fr and the
  bilinear upsampling of the stitched map. ``work_table`` counts it for nets of any width and
  image size, e.g. VGG16's on 500x500 (the paper's), which no CPU run here reaches.
- time: the median over --time-rounds rounds; each round runs every method once on the same
  validation image, in the order A B C ... and the next round in reverse, so that a slow spell
  of a shared machine falls on all of them alike. Wall-clock time on whatever threads NumPy has.
- memory: the peak of NumPy's allocations during one pass (tracemalloc, which NumPy reports its
  array buffers to) above what was allocated before it: activations, scratch and the output,
  not the weights. Not the RSS that benchmarks/models.py measures (it compares with PyTorch,
  whose allocator tracemalloc cannot see); here every method runs on NumPy.

Rarefied and stitched scores are equal only when the trunk's conv biases are <= 0 (shift.py):
trained nets have positive biases, so the two differ near the image's border, and the study
reports how much (max |score difference|, share of pixels labelled differently).
"""
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from .. import backend, io, training
from ..autograd import Tensor, no_grad
from ..data import Loader
from ..metrics import RunningScore
from ..models import fcn8s, fcn16s, fcn32s, geometry, padding, rarefy, shift, stitched_scores
from ..viz import save_figure
from . import options
from .skip_architectures import METRICS, common_pad1

NETS = ("fcn32s", "fcn16s", "fcn8s")
# key -> (label, coarse stride, net whose weights it uses); the order of the table
METHODS = {
    "fcn32s": ("FCN-32s", 32, "fcn32s"),
    "rarefied16": ("FCN-32s rarefied at pool5", 16, "fcn32s"),
    "rarefied8": ("FCN-32s rarefied at pool5, pool4", 8, "fcn32s"),
    "stitch2": ("FCN-32s shift-and-stitch f = 2", 16, "fcn32s"),
    "stitch4": ("FCN-32s shift-and-stitch f = 4", 8, "fcn32s"),
    "fcn16s": ("FCN-16s", 16, "fcn16s"),
    "fcn8s": ("FCN-8s", 8, "fcn8s"),
}
TWINS = (("stitch2", "rarefied16"), ("stitch4", "rarefied8"))  # the same scores in theory


def study_pad1(width, size):
    """conv1_1 padding for the three nets: ``common_pad1`` or, if more, the smallest at which
    FCN-32s rarefied at pool5 and pool4 still covers a size x size input (105)."""
    probe = fcn32s(n_class=1, width=1 / 64, pad1=1024)  # the geometry alone
    probe = rarefy(rarefy(probe, "pool5"), "pool4")
    return max(common_pad1(width, size), padding.min_pad1(probe, size))


def jobs(base, seeds, out):
    """(config, run_dir) of every net and seed: ``base`` with model, seed and pad1 set."""
    pad1 = study_pad1(base["width"], base["size"])
    return [(training.resolve({**base, "model": net, "seed": seed, "pad1": pad1}),
             Path(out) / f"{net}-seed{seed}") for seed in seeds for net in NETS]


def methods(models):
    """{method key: a function x (N, 3, H, W) Tensor -> full-size scores} from the trained
    {net name: model in eval mode}. The rarefied nets are built here, once (not timed)."""
    m32 = models["fcn32s"]
    r16 = rarefy(m32, "pool5")
    r8 = rarefy(r16, "pool4")
    return {"fcn32s": m32, "rarefied16": r16, "rarefied8": r8,
            "stitch2": lambda x: stitched_scores(m32, x, 2),
            "stitch4": lambda x: stitched_scores(m32, x, 4),
            "fcn16s": models["fcn16s"], "fcn8s": models["fcn8s"]}


def macs(net, size):
    """Multiply-adds of one size x size image through ``net``."""
    return sum(s.macs for s in geometry.trace(net, (1, net.conv1_1.in_channels, size, size)))


def stitched_macs(net, f, size):
    """Multiply-adds of stitched_scores(net, x, f) for a size x size image: every copy to
    score_fr, then the k 2a, stride a bilinear upsampling of the stitched map."""
    a = int(shift.coarse_map(net).a) // f
    total, rows = 0, []
    for y in range(f):
        for c in range(f):
            steps = geometry.trace(net, (1, 3, size + y * a, size + c * a))
            end = next(i for i, st in enumerate(steps) if st.name == "score_fr") + 1
            total += sum(st.macs for st in steps[:end])
            if c == 0:
                rows.append(f * steps[end - 1].shape[2] + f - 1 - y)  # as shift_and_stitch
    n = net.score_fr.out_channels
    return total + min(rows) ** 2 * n * n * (2 * a) ** 2


def work(nets, size):
    """{method key: multiply-adds per size x size image} for {net name: model}; FCN-32s's five
    methods, and FCN-16s's and FCN-8s's where ``nets`` has them."""
    m32 = nets["fcn32s"]
    r16 = rarefy(m32, "pool5")
    counts = {"fcn32s": macs(m32, size), "rarefied16": macs(r16, size),
              "rarefied8": macs(rarefy(r16, "pool4"), size),
              "stitch2": stitched_macs(m32, 2, size), "stitch4": stitched_macs(m32, 4, size)}
    return {**counts, **{n: macs(nets[n], size) for n in ("fcn16s", "fcn8s") if n in nets}}


def work_table(width=1.0, size=500, pad1=105, n_class=21):
    """Markdown table of every method's multiply-adds per image for nets of that width (1.0:
    VGG16's) on size x size images, e.g. the paper's scale, where fc6 weighs far more than in
    the miniature. Builds the nets one at a time (width 1: about 0.5 GB each, twice that while
    FCN-32s is rarefied)."""
    counts = work({"fcn32s": fcn32s(n_class=n_class, width=width, pad1=pad1)}, size)
    for name, build in (("fcn16s", fcn16s), ("fcn8s", fcn8s)):
        counts[name] = macs(build(n_class=n_class, width=width, pad1=pad1), size)
    lines = ["| method | stride | GMACs per image | x FCN-32s |", "|---|---|---|---|"]
    for k, (label, stride, _) in METHODS.items():
        lines.append(f"| {label} | {stride} | {counts[k] / 1e9:.1f} | "
                     f"{counts[k] / counts['fcn32s']:.2f} |")
    return "\n".join(lines)


def evaluate(predict, loader, n_class, device="cpu"):
    """The four metrics (metrics.scores) of a scoring function over every batch of loader, the
    arg-max of its full-size scores against the labels (255 ignored)."""
    running = RunningScore(n_class)
    for x, y in loader.epoch(0):
        with no_grad():
            scores = predict(Tensor(backend.to_device(x, device))).data
        xp = backend.get_array_module(scores)
        running.update(y, backend.as_numpy(xp.argmax(scores, axis=1)))
    return running.scores()


def agreement(a, b, loader, device="cpu"):
    """(max |a(x) - b(x)|, share of pixels whose arg-max differs) over loader's images."""
    diff, changed, total = 0.0, 0, 0
    for x, _ in loader.epoch(0):
        x = Tensor(backend.to_device(x, device))
        with no_grad():
            sa, sb = backend.as_numpy(a(x).data), backend.as_numpy(b(x).data)
        diff = max(diff, float(np.abs(sa - sb).max()))
        changed += int((sa.argmax(1) != sb.argmax(1)).sum())
        total += sa.shape[0] * sa.shape[2] * sa.shape[3]
    return diff, changed / total


def time_methods(predicts, images, rounds):
    """{key: seconds of each pass} for every method, one image at a time, alternating."""
    keys, seconds = list(predicts), {k: [] for k in predicts}
    with no_grad():
        for k in keys:  # warm-up: first calls allocate and pick BLAS paths
            predicts[k](images[0])
        for r in range(rounds):
            x = images[r % len(images)]
            for k in keys if r % 2 == 0 else keys[::-1]:
                t0 = time.perf_counter()
                predicts[k](x)
                seconds[k].append(time.perf_counter() - t0)
    return seconds


def peak_bytes(predict, x):
    """The peak of traced (NumPy) allocations during one pass above what existed before it."""
    with no_grad():
        predict(x)  # warm-up outside the trace
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            predict(x)
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()


def measure(checkpoints, rounds, device="cpu"):
    """Everything the table shows for one seed: checkpoints {net: a training checkpoint or a
    learned-weights file, as training.load_model reads}. Returns {'scores': {key: metrics},
    'seconds': {key: [s, ...]}, 'bytes': {key: peak}, 'twins': {key: (max diff, share)},
    'trained': {net: best mean IU of its run}, 'config': the FCN-8s's, 'macs': {key: MACs}}."""
    models, config = {}, None
    for net, path in checkpoints.items():
        models[net], config = training.load_model(path, device)
    val = training.dataset(config, "val")
    loader = Loader(val, config["val_batch_size"], shuffle=False)
    predicts = methods(models)
    scores = {k: evaluate(f, loader, val.n_class, device) for k, f in predicts.items()}
    twins = {a: agreement(predicts[a], predicts[b], loader, device) for a, b in TWINS}
    one_by_one = Loader(val, 1, shuffle=False).epoch(0)  # cycle over a few images, batch 1
    images = [Tensor(backend.to_device(x, device)) for (x, _), _ in zip(one_by_one, range(8))]
    seconds = time_methods(predicts, images, rounds)
    peaks = ({k: peak_bytes(f, images[0]) for k, f in predicts.items()} if device == "cpu"
             else {})  # tracemalloc sees host allocations only
    trained = {net: (io.load_checkpoint(path)[1].get("best") or {}).get("mean_iu")
               for net, path in checkpoints.items()}
    return {"scores": scores, "seconds": seconds, "bytes": peaks, "twins": twins,
            "trained": trained, "config": config, "macs": work(models, config["size"])}


def table(per_seed):
    """Markdown table over the seeds' ``measure`` results: metrics as means (per cent), mean IU
    with its standard deviation and every seed's, the median time per image (all seeds' passes)
    and its ratio to FCN-32s's, the peak memory per image."""
    cols = ["method", "stride", "pixel acc.", "mean acc.", "mean IU", "f.w. IU"]
    cols += ["mean IU per seed"] if len(per_seed) > 1 else []
    cols += ["MMACs per image", "ms per image", "x FCN-32s", "peak MB per image"]
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    med = {k: 1000 * statistics.median(s for m in per_seed for s in m["seconds"][k])
           for k in METHODS}
    for k, (label, stride, _) in METHODS.items():
        mean = {m: 100 * statistics.fmean(r["scores"][k][m] for r in per_seed) for m in METRICS}
        ius = [100 * r["scores"][k]["mean_iu"] for r in per_seed]
        spread = f" ± {statistics.stdev(ius):.1f}" if len(ius) > 1 else ""
        cells = [label, str(stride), f"{mean['pixel_acc']:.1f}", f"{mean['mean_acc']:.1f}",
                 f"{mean['mean_iu']:.1f}{spread}", f"{mean['fw_iu']:.1f}"]
        cells += [" / ".join(f"{v:.1f}" for v in ius)] if len(per_seed) > 1 else []
        peaks = [r["bytes"][k] for r in per_seed if k in r["bytes"]]
        cells += [f"{per_seed[0]['macs'][k] / 1e6:.0f}", f"{med[k]:.0f}",
                  f"{med[k] / med['fcn32s']:.1f}",
                  f"{statistics.fmean(peaks) / 2**20:.1f}" if peaks else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), med


def plot(path, per_seed, med):
    """Mean IU (mean over seeds, bars: standard deviation) against ms per image."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4), dpi=80)
    ax = fig.add_subplot(1, 1, 1)
    colours = {"fcn32s": "C0", "fcn16s": "C1", "fcn8s": "C2"}
    for k, (label, stride, net) in METHODS.items():
        ius = [100 * r["scores"][k]["mean_iu"] for r in per_seed]
        sd = statistics.stdev(ius) if len(ius) > 1 else 0
        marker = "s" if k.startswith("stitch") else "^" if k.startswith("rarefied") else "o"
        ax.errorbar(med[k], statistics.fmean(ius), yerr=sd, fmt=marker, color=colours[net],
                    capsize=3, label=f"{label} (stride {stride})")
    ax.set_xscale("log")
    ax.set(xlabel="ms per image (median, log scale)", ylabel="mean IU (%)",
           title="denser FCN-32s against the skip nets")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(path, fig)


def trained_sets(study_jobs, results):
    """[{net: best checkpoint}] of every seed whose three nets trained (results: None for a
    run that failed), in the order of the seeds."""
    sets = []
    for seed in sorted({config["seed"] for config, _ in study_jobs}):
        done = {c["model"]: Path(d) / training.BEST for (c, d), r in zip(study_jobs, results)
                if c["seed"] == seed and r is not None}
        if len(done) == len(NETS):
            sets.append(done)
    return sets


def weight_sets(folder, data="shapes"):
    """[{net: FOLDER/DATA-NET.npz}]: the nets that ``skip_architectures --save-weights FOLDER``
    wrote (tutorials/assets holds its seed-0 nets), one set; SystemExit naming a missing file."""
    found = {net: Path(folder) / f"{data}-{net}.npz" for net in NETS}
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"error: --score-weights {folder}: no {', '.join(missing)} (written by "
                         f"python -m minifcn.experiments.skip_architectures --save-weights)")
    return [found]


def report(sets, out, rounds, device="cpu"):
    """Score every set of nets ({net: checkpoint}, one per seed), print and write the table
    (OUT/shift.md) and the plot (OUT/shift.png); returns the rows for summary.json."""
    if not sets:
        print("\nshift: no seed has all three nets trained; nothing to score")
        return []
    per_seed = [measure(checkpoints, rounds, device) for checkpoints in sets]
    used = [r["config"]["seed"] for r in per_seed]
    config = per_seed[0]["config"]  # as trained (--rescore reads earlier runs)
    text, med = table(per_seed)
    head = (f"shift: {config['data']} {config['size']}x{config['size']}, width "
            f"{config['width']}, conv1_1 padding {config['pad1']}, {config['iters']} steps, "
            f"seeds {', '.join(map(str, used))}; {len(per_seed[0]['scores'])} ways to score "
            f"on the validation images, batch 1 for the cost, {rounds} rounds per seed:")
    print(f"\n{head}\n\n{text}")
    for a, b in TWINS:
        diff = max(r["twins"][a][0] for r in per_seed)
        share = statistics.fmean(r["twins"][a][1] for r in per_seed)
        line = (f"{METHODS[a][0]} against {METHODS[b][0]}: max |score difference| {diff:.3g}, "
                f"pixels labelled differently {100 * share:.2f} %")
        print(line)
        text += "\n\n" + line
    options.write_text(Path(out) / "shift.md", f"{head}\n\n{text}\n")
    plot(Path(out) / "shift.png", per_seed, med)
    print(f"\ntable: {Path(out) / 'shift.md'}, plot: {Path(out) / 'shift.png'}")
    return [{"setting": k, "seed": seed, **{m: r["scores"][k][m] for m in METRICS},
             "ms_per_image": 1000 * statistics.median(r["seconds"][k]), "macs": r["macs"][k],
             "peak_bytes": r["bytes"].get(k), "trained_best_mean_iu":
             r["trained"].get(METHODS[k][2]) if k in NETS else None}
            for seed, r in zip(used, per_seed) for k in METHODS]
