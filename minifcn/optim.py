"""SGD with momentum as Caffe (and so FCN's reference solvers) does it, and learning-rate
schedules.

Caffe's update, per parameter w with gradient g, base rate lr and the group's multipliers:

    v <- momentum * v + lr * lr_mult * (g + weight_decay * decay_mult * w)
    w <- w - v

(PyTorch folds lr in after the momentum instead; the two agree while lr is constant and differ
when a schedule changes it.) The reference nets double the bias learning rate and give biases no
weight decay: ``param_groups(model)`` builds exactly those groups.
"""
import math

from .backend import get_array_module


def param_groups(model, bias_lr_mult=2.0, bias_decay_mult=0.0, lr_mults=None):
    """Two groups as the reference solvers: weights (lr x1, decay x1) and biases (lr x2, no
    decay). Parameters that do not require grad (fixed upsampling) are left out.

    lr_mults: {parameter name: extra lr multiplier}; each named parameter gets a group of its
    own (after the two), e.g. ``{"conv1_1.weight": 1 / 64**2}`` (see ``first_layer_lr_mult``).
    """
    lr_mults = dict(lr_mults or {})
    named = dict(model.named_parameters())
    unknown = sorted(name for name in lr_mults if name not in named or not named[name].requires_grad)
    if unknown:
        raise ValueError(f"param_groups: lr_mults names no trainable parameter of the model: "
                         f"{unknown}")
    weights, biases, extra = [], [], []
    for name, p in named.items():
        if not p.requires_grad:
            continue
        is_bias = name.endswith("bias")
        if name in lr_mults:
            extra.append({"params": [p],
                          "lr_mult": lr_mults[name] * (bias_lr_mult if is_bias else 1.0),
                          "decay_mult": bias_decay_mult if is_bias else 1.0})
        else:
            (biases if is_bias else weights).append(p)
    return [{"params": weights, "lr_mult": 1.0, "decay_mult": 1.0},
            {"params": biases, "lr_mult": bias_lr_mult, "decay_mult": bias_decay_mult}] + extra


def first_layer_lr_mult(input_std):
    """The lr multiplier that makes SGD treat a first layer fed raw inputs of std ``input_std``
    like every later layer, which sees activations of std ~1.

    A weight's gradient is proportional to its input, and a first layer initialised for raw
    pixels has weights ``input_std`` times smaller than a unit-input layer's: its relative step
    is ``input_std**2`` times larger (here 64**2 = 4096). From scratch that makes conv1_1 jump
    by many times its own size each step, noise that stalls learning, and at width >= 0.25 the
    run diverges in a few steps. Multiplying its lr by ``1 / input_std**2`` is exactly SGD on the
    same net with the inputs divided by ``input_std`` (weight decay aside).
    """
    return 1.0 / float(input_std) ** 2


class SGD:
    """SGD(params, lr, momentum=0.9, weight_decay=0.0005).

    params: an iterable of Parameters, or of dicts {'params': [...], 'lr_mult': float,
    'decay_mult': float} (missing multipliers default to 1). ``lr`` may be changed between steps
    (a schedule sets it). ``state_dict``/``load_state_dict`` carry the momentum buffers, so a
    resumed run continues exactly.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0005):
        if lr <= 0 or not math.isfinite(lr):
            raise ValueError(f"SGD: lr must be a positive number, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"SGD: weight_decay must be >= 0, got {weight_decay}")
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [{"params": params}]
        self.groups = [{"params": list(g["params"]), "lr_mult": float(g.get("lr_mult", 1.0)),
                        "decay_mult": float(g.get("decay_mult", 1.0))} for g in params]
        if not any(g["params"] for g in self.groups):
            raise ValueError("SGD: no parameters to optimise")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity = [[None] * len(g["params"]) for g in self.groups]
        self._buffers = {}

    def zero_grad(self):
        for g in self.groups:
            for p in g["params"]:
                p.grad = None

    def step(self):
        for group, velocities in zip(self.groups, self.velocity):
            lr = self.lr * group["lr_mult"]
            decay = self.weight_decay * group["decay_mult"]
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                # The same arithmetic as lr * (g + decay * w), in place in one reused buffer:
                # each temporary of VGG16's fc6 (410 MB) was a fresh allocation and its page
                # faults, five per step, which made this step 3x PyTorch's at width 1.
                step = self._scratch(p.data)
                xp = get_array_module(step)
                if decay:
                    xp.multiply(p.data, decay, out=step)
                    step += p.grad
                    step *= lr
                else:
                    xp.multiply(p.grad, lr, out=step)
                v = velocities[i]
                if v is None:
                    velocities[i] = v = step.copy()
                else:
                    v *= self.momentum
                    v += step
                p.data -= v

    def _scratch(self, like):
        """A reused buffer shaped like ``like`` (one per array module and dtype, sized by the
        largest parameter seen)."""
        xp = get_array_module(like)
        key = (xp.__name__, like.dtype.str)
        buf = self._buffers.get(key)
        if buf is None or buf.size < like.size:
            buf = self._buffers[key] = xp.empty(like.size, dtype=like.dtype)
        return buf[:like.size].reshape(like.shape)

    def state_dict(self):
        """{'velocity.G.I': array} for every buffer that exists (group G, parameter I). The
        arrays are the live buffers, updated in place by ``step`` (as PyTorch's): copy them to
        keep a snapshot."""
        return {f"velocity.{gi}.{pi}": v for gi, vs in enumerate(self.velocity)
                for pi, v in enumerate(vs) if v is not None}

    def load_state_dict(self, state):
        for key, value in state.items():
            try:
                _, gi, pi = key.split(".")
                p = self.groups[int(gi)]["params"][int(pi)]
            except (ValueError, IndexError):
                raise ValueError(f"SGD.load_state_dict: unexpected key {key!r}") from None
            if tuple(value.shape) != p.shape:
                raise ValueError(f"SGD.load_state_dict: {key} has shape {tuple(value.shape)}, "
                                 f"its parameter {p.shape}")
            # a copy: step updates it in place, and the caller's array stays theirs
            self.velocity[int(gi)][int(pi)] = get_array_module(p.data).array(value, dtype=p.dtype)


def constant():
    """lr multiplier 1 at every iteration."""
    return lambda it: 1.0


def step(step_size, gamma=0.1):
    """Multiply lr by gamma every step_size iterations (Caffe's 'step')."""
    if step_size < 1:
        raise ValueError(f"step schedule: step_size must be >= 1, got {step_size}")
    return lambda it: gamma ** (it // step_size)


def poly(max_iter, power=0.9):
    """(1 - it/max_iter)^power, Caffe's 'poly' (decays to 0 at max_iter)."""
    if max_iter < 1:
        raise ValueError(f"poly schedule: max_iter must be >= 1, got {max_iter}")
    return lambda it: max(0.0, 1 - it / max_iter) ** power


SCHEDULES = {"constant": constant, "step": step, "poly": poly}


def warmup(schedule, iters):
    """``schedule`` times a linear ramp from 1/iters to 1 over the first ``iters`` iterations.

    Large learning rates on a net trained from scratch can throw the first steps far off while
    its random features give large, inconsistent gradients; a short ramp avoids that."""
    if iters < 0:
        raise ValueError(f"warmup: iters must be >= 0, got {iters}")
    if iters == 0:
        return schedule
    return lambda it: schedule(it) * min(1.0, (it + 1) / iters)


def make_schedule(name, max_iter, step_size=None, gamma=0.1, power=0.9, warmup_iters=0):
    """A schedule by name ('constant', 'step', 'poly'), for --lr-schedule of python -m minifcn.train, with
    an optional linear warm-up (--warmup)."""
    if name == "constant":
        schedule = constant()
    elif name == "step":
        schedule = step(step_size or max(1, max_iter // 3), gamma)
    elif name == "poly":
        schedule = poly(max_iter, power)
    else:
        raise ValueError(f"unknown lr schedule {name!r}: expected one of {sorted(SCHEDULES)}")
    return warmup(schedule, warmup_iters)
