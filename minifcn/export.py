"""Export a trained model for other tools: PyTorch, ONNX, safetensors.

    python -m minifcn.export CHECKPOINT --to pytorch|onnx|safetensors --out FILE [--overwrite]

CHECKPOINT is a checkpoint of ``python -m minifcn.train`` (read with
``minifcn.training.load_model``). What each target writes:

  pytorch      a state dict for the PyTorch FCN port's nets (wkentaro/pytorch-fcn, torchfcn's
               FCN32s / FCN16s / FCN8s / FCN8sAtOnce): the same layer names as minifcn's
               (Caffe's), with conv1_1's input channels reversed, since the port, like Caffe,
               reads BGR. ``torch.load(FILE, weights_only=True)`` reads it, and
               ``FCN8s(n_class).load_state_dict(...)`` takes it strictly at width 1. Written
               in torch's zip format by :func:`save_torch_state_dict` (no torch needed).
               The nets after FCN that are not FCNs (segnet, segnet-basic, deconvnet, unet,
               deeplab-largefov, deeplab-aspp) have no port: their state dict goes as it
               is (RGB; batch norm's running statistics and num_batches_tracked included),
               for a PyTorch module with the same names. fcn8s-se and fcn8s-nonlocal are
               written in the port's layout (BGR conv1_1) with their blocks' weights too, so
               the port's FCN8s loads them only with strict=False (it has no such blocks).
  onnx         the whole net for inference (see :mod:`minifcn.io.onnx`): input "image"
               (N, 3, H, W), output "scores" (N, n_class, H, W), N, H and W free: an FCN
               takes any image size, as predict does (conv1_1 is padded more for an image
               smaller than the run's padding takes, inside the graph).
  safetensors  minifcn's own state dict (RGB conv1_1) as a .safetensors file
               (:mod:`minifcn.io.safetensors`).

Every input is RGB pixels 0..255 minus ``minifcn.data.transforms.MEAN_RGB`` (for the port:
BGR minus the same mean in BGR order). An existing FILE is refused unless --overwrite, and
CHECKPOINT itself always (by any path: a symlink too); a missing folder is made. FILE is
written to a temporary name and renamed (``minifcn.io.atomic_path``), so a failed export
leaves whatever was there before. Errors are one line naming the file or option.
"""
import argparse
import os
import sys
import warnings

from .io.atomic import check_output
from .io.export import PORT_PAD1, pytorch_state_dict, to_onnx, to_pytorch, to_safetensors
from .io.torchwrite import save_torch_state_dict

__all__ = ["to_pytorch", "to_onnx", "to_safetensors", "pytorch_state_dict",
           "save_torch_state_dict", "PORT_PAD1", "main"]

# ---- the command -------------------------------------------------------------------------------

TARGETS = {"pytorch": to_pytorch, "onnx": to_onnx, "safetensors": to_safetensors}


def parser():
    p = argparse.ArgumentParser(prog="python -m minifcn.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint written by python -m minifcn.train")
    p.add_argument("--to", required=True, choices=sorted(TARGETS), help="the format to write")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists "
                   "(never the checkpoint itself)")
    return p


def _load(checkpoint):
    from .training import load_model

    try:
        return load_model(checkpoint)[0]
    except (KeyError, TypeError) as e:  # a config this minifcn cannot build a model from
        raise ValueError(f"{checkpoint}: its config does not describe a model this minifcn can "
                         f"build ({type(e).__name__}: {e})") from None
    except ValueError as e:  # e.g. weights that do not fit the model: say which file
        if str(checkpoint) in str(e):
            raise
        raise ValueError(f"{checkpoint}: {e}") from None


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        rules = dict(option="--out", overwrite=args.overwrite, inputs=[args.checkpoint])
        check_output(args.out, **rules)
        if args.to == "onnx":  # before the model is loaded, which can take a while
            from .io.onnx import require_onnx

            require_onnx("--to onnx")
        model = _load(args.checkpoint)
        check_output(args.out, **rules, create=True)  # again: loading took a while
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            TARGETS[args.to](model, args.out)
    except (ImportError, ValueError, OSError) as e:  # OSError: FileNotFoundError too
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"{args.checkpoint} -> {args.out} ({args.to}, {type(model).__name__}, "
          f"{os.path.getsize(args.out) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
