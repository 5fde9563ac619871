"""What a run's config builds: the model, the optimiser, the datasets; and models rebuilt from
a checkpoint (``load_model``, for evaluate and predict) or initialised from weight files
(``load_weights_into``, for ``--init-from``)."""
import numpy as np

from .. import backend, io, optim
from ..data import get_dataset
from ..loss import IGNORE_INDEX
from ..models.classifier import shipped_classifier_path as shipped_classifier
from ..models.registry import CLASSIFIER_START
from .config import LEARN_UPSAMPLING, SYNTHETIC, option
from .limits import check_checkpoint_config


# --init-from must fill at least this share of the model's learned weights (counted in numbers):
# staged training and the VGG16 trunk fill 99 % and more; below it, the run would train from
# scratch while looking initialised
MIN_INIT_SHARE = 0.5


def build_model(config):
    """The model ``config`` names, with conv1_1's padding resolved ('auto', 'full' -> int);
    "vgg16" is the classifier that ``python -m minifcn.pretrain`` trains."""
    from ..models import PLAIN_NETS, build, padding
    from ..models.classifier import VGGClassifier

    if config["model"] == "vgg16":
        return VGGClassifier(config["n_class"], width=config["width"],
                             dropout=option(config, "dropout"))
    if config["model"] in PLAIN_NETS:  # no conv1_1 padding, dropout or fixed upsampling
        model = build(config["model"], n_class=config["n_class"], width=config["width"])
        return freeze_trunk(model) if option(config, "freeze_trunk") else model
    pad1 = config["pad1"]
    if pad1 == "auto":  # the smallest conv1_1 padding whose crops still cover the input
        pad1 = config["pad1"] = padding.min_pad1(config["model"], config.get("size"))
    elif pad1 == "full":  # the smallest at which the coarse scores reach every pixel in full
        pad1 = config["pad1"] = padding.full_cover_pad1(config["model"], config["size"])
    model = build(config["model"], n_class=config["n_class"], width=config["width"], pad1=pad1,
                  dropout=option(config, "dropout"),
                  learn_upsampling=LEARN_UPSAMPLING[option(config, "learn_upsampling")])
    if option(config, "freeze_trunk"):
        freeze_trunk(model)
    return model


def freeze_trunk(model):
    """The paper's "FCN-32s-fixed" (Table 2): only the score layers (score_fr and the skips'
    score_pool4/3) learn; the trunk conv1_1 ... fc7 keeps its weights (requires_grad False, so
    the optimiser skips it and backward computes no gradient for it). For an encoder-decoder
    the trunk is what a classifier fills (its ``classifier_layers``: SegNet's and DeconvNet's
    VGG16 convolutions, fc6 and fc7); their batch normalisation and the decoder learn. The
    context blocks of FCN-8s + SE / + non-local (``pool4_context`` ...) start new: they learn
    too (a frozen non-local block would stay the identity)."""
    trunk = getattr(model, "classifier_layers", None)
    if trunk is not None and not trunk:
        raise ValueError(f"--freeze-trunk: {type(model).__name__} has no classifier trunk to "
                         f"freeze (only {', '.join(CLASSIFIER_START)} start from one)")
    for name, p in model.named_parameters():
        new = name.startswith("score") or "_context." in name
        if (name.rsplit(".", 1)[0] in trunk) if trunk else not new:
            p.requires_grad = False
    return model


def final_stride(model):
    """The stride of the net's last coarse map, the one its final upsampling enlarges: 32 for
    FCN-32s, 16 for FCN-16s, 8 for FCN-8s (the cells that --loss-sampling keeps or drops)."""
    for name in ("upscore8", "upscore16", "upscore"):
        if hasattr(model, name):
            return getattr(model, name).stride[0]
    raise ValueError(f"final_stride: {type(model).__name__} has no final upsampling layer")


def balanced_class_weights(data, n_class, max_images=500):
    """Class balancing (paper section 4.3): weight_c = pixels / (n_class * pixels of class c),
    counted over the first ``max_images`` images of ``data``, so every class carries the same
    total weight; a class never seen gets 0."""
    counts = np.zeros(n_class)
    for i in range(min(len(data), max_images)):
        label = data[i][1]
        counts += np.bincount(label[label != IGNORE_INDEX].ravel(), minlength=n_class)[:n_class]
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, counts.sum() / (n_class * counts), 0.0)


def make_optimizer(model, config):
    """Caffe's SGD with the reference groups (biases lr x2, no decay) and, when the config asks,
    conv1_1's weight on an lr of its own (``optim.first_layer_lr_mult``)."""
    mult = option(config, "conv1_lr_mult")
    if not model.conv1_1.weight.requires_grad:  # a frozen trunk: nothing of conv1_1 learns
        mult = 1
    groups = optim.param_groups(model, lr_mults={"conv1_1.weight": mult} if mult != 1 else None)
    return optim.SGD(groups, lr=config["lr"], momentum=config["momentum"],
                     weight_decay=config["weight_decay"])


def dataset(config, split, spec=None):
    """The ``split`` of the dataset ``spec`` (default: the run's ``--data``). The synthetic sets
    are made as the run made them: same image size, data seed and, for the run's own data, the
    same number of images."""
    spec = spec or config["data"]
    kw = {}
    if spec in SYNTHETIC:
        kw = {"size": config["size"], "seed": config["data_seed"]}
        n = config.get({"train": "n_train", "val": "n_val"}.get(split, ""))
        if n and spec == config["data"]:
            kw["n"] = n
    return get_dataset(spec, split, **kw)


def check_data(spec, train_set, val_set):
    """What would stop a run late, found before it starts (ValueError naming it): a train and a
    val split that share images (the scores would be measured on training images), and a bad
    validation label (``check_labels``: every label of the val split read once, its values and
    size checked), which would otherwise be found after a whole epoch of training."""
    train_names, val_names = getattr(train_set, "names", None), getattr(val_set, "names", None)
    if train_names is not None and val_names is not None:
        shared = sorted(set(train_names) & set(val_names))
        if shared:
            more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
            raise ValueError(f"--data {spec}: the train and val splits share {len(shared)} of "
                             f"their ids ({', '.join(shared[:5])}{more}); validating on training "
                             f"images overstates every score: take them out of one list")
    val_set.check_labels()


def read_weights(path):
    """``{name: array}`` in minifcn's names from a weights file: a PyTorch file (.pt, .pth,
    .bin: torchvision VGG16 or the FCN port) or a Caffe .caffemodel (the authors' FCN nets or
    VGG16) through ``io.import_weights`` (renamed and reshaped, conv1_1 turned to RGB); else a
    minifcn checkpoint (its model/ arrays) or .npz of weights."""
    from ..models.classifier import convolutional_state, is_classifier_state

    path = str(path)
    if path.lower().endswith((".pt", ".pth", ".bin", ".caffemodel")):
        return io.import_weights(path)
    state = io.load(path)
    if any(k.startswith("model/") for k in state):
        state = {k[len("model/"):]: v for k, v in state.items() if k.startswith("model/")}
    if is_classifier_state(state):  # python -m minifcn.pretrain's: fc6, fc7 as convolutions
        state = convolutional_state(state)
    return state


def load_weights_into(model, path, log=print):
    """Initialise ``model`` from a checkpoint, an .npz of weights, a PyTorch file (torchvision
    VGG16 or the FCN port), a Caffe .caffemodel or a classifier of ``python -m minifcn.pretrain``
    (convolutionalised: ``read_weights``), matching by layer name:
    the staged training of the paper (16s from 32s, 8s from 16s) and fine-tuning. Layers absent
    from the file, or of another shape (a score layer with another number of classes), keep
    their initialisation; both are reported."""
    path = str(path)
    state = read_weights(path)
    own = dict(model.named_parameters())
    # buffers (batch norm's running statistics) load with their layer, but are not weights
    tensors = {**own, **dict(model.named_buffers())}
    loaded = {k: v for k, v in state.items() if k in tensors and tuple(v.shape) == tensors[k].shape}
    # the weights a file should fill: every learned one, and a frozen trunk's too (--freeze-trunk
    # starts from the file and keeps it); not the fixed bilinear upsampling the model makes
    learned = {k: p.data.size for k, p in own.items()
               if p.requires_grad or not k.startswith("upscore")}
    share = sum(learned.get(k, 0) for k in loaded) / sum(learned.values())
    # an encoder-decoder's VGG16 trunk is about half of it (the decoder mirrors it): a file that
    # fills the whole trunk is a start, whatever its share
    trunk = getattr(model, "classifier_layers", ())
    whole_trunk = bool(trunk) and all(k in loaded for k in own if k.rsplit(".", 1)[0] in trunk)
    if share < MIN_INIT_SHARE and not whole_trunk:  # e.g. a checkpoint of another --width: only a bias would match
        raise ValueError(
            f"--init-from {path}: only {len(loaded)} tensors ({share:.0%} of the model's learned "
            f"weights) match the model by name and shape, less than {MIN_INIT_SHARE:.0%}; is it "
            f"a net of another --model, --width or number of classes? (matching: "
            f"{sorted(loaded)[:5] or 'none'}; the file has {sorted(state)[:5]}...)")
    model.load_state_dict({**model.state_dict(), **loaded})  # cast to the model's dtype
    kept = [k for k in tensors if k not in loaded]
    ignored = [k for k in state if k not in loaded]
    log(f"init from {path}: loaded {len(loaded)} tensors; kept at init: {kept or 'none'}; "
        f"ignored from file: {ignored or 'none'}")


def load_model(checkpoint_path, device="cpu"):
    """Rebuild the model a training checkpoint was made with and load its weights.
    Returns (model in eval mode, config).

    Also reads the float16 "learned weights only" files of ``skip_architectures
    --save-weights`` (meta ``learned_only``): the layers they leave out (the fixed bilinear
    upsampling) are rebuilt by the model itself."""
    arrays, meta = io.load_checkpoint(checkpoint_path)
    config = meta.get("config")
    if not config:
        raise ValueError(f"{checkpoint_path}: not a minifcn training checkpoint (no config)")
    check_checkpoint_config(config, checkpoint_path)  # before a net of any size is built
    model = build_model(config)
    state = {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}
    if meta.get("learned_only"):
        missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in state]
        missing += [n for n, _ in model.named_buffers() if n not in state]  # running statistics
        if missing:
            raise ValueError(f"{checkpoint_path}: learned weights missing for {missing}")
        full = model.state_dict()
        full.update({k: v.astype(full[k].dtype) for k, v in state.items()})
        state = full
    try:
        model.load_state_dict(state)
    except (ValueError, TypeError) as e:  # weights that do not fit the config: say which file
        raise ValueError(f"{checkpoint_path}: {e}") from None
    return model.to(backend.check_device(device)).eval(), config
