"""The names users and tutorials rely on (the design's list of public names) import from where
the design says, and every command answers --help: the layout may move files, not these."""
import importlib
import subprocess
import sys

import pytest

PUBLIC = {
    "minifcn": ["Tensor", "no_grad", "gradcheck", "summary", "manual_seed", "cat", "functional",
                "nn", "models", "optim", "metrics", "data", "io", "training"],
    "minifcn.functional": ["conv2d", "conv_transpose2d", "max_pool2d", "max_unpool2d", "crop",
                           "relu", "dropout", "softmax_cross_entropy", "batch_norm", "cat",
                           "interpolate", "adaptive_avg_pool2d", "sigmoid", "softmax",
                           "log_softmax", "matmul", "getitem", "sqrt"],
    "minifcn.nn": ["Module", "Parameter", "Buffer", "Conv2d", "ConvTranspose2d", "MaxPool2d",
                   "MaxUnpool2d", "ReLU", "Dropout", "Sequential", "BatchNorm2d",
                   "AdaptiveAvgPool2d", "Upsample", "Sigmoid", "Softmax", "SqueezeExcitation",
                   "NonLocal2d"],
    "minifcn.models": ["FCN32s", "FCN16s", "FCN8s", "FCN8sAtOnce", "fcn32s", "fcn16s", "fcn8s",
                       "fcn8s_atonce", "rarefy", "shift_and_stitch", "convolutionalize"],
    "minifcn.optim": ["SGD"],
    "minifcn.metrics": ["panoptic_quality", "RunningPanoptic", "border_mask"],
    "minifcn.instances": ["discriminative_loss", "centre_targets", "CentreTargets",
                          "centre_offset_loss", "connected_components", "cluster_embeddings",
                          "group_by_centres", "instance_classes"],
    "minifcn.io": ["save", "load", "read_torch_state_dict", "read_caffemodel", "import_weights"],
    "minifcn.export": ["to_pytorch", "to_onnx"],
    "minifcn.viz": ["graph", "confusion_figure", "per_class_iu_figure", "worst_images_figure",
                    "save_figure", "layer_grids", "layers_figure", "receptive_field",
                    "pixel_figure", "alignment", "alignment_figure", "coords_figure",
                    "feature_maps", "feature_maps_figure", "skip_scores", "skip_scores_figure",
                    "upsampling_kernels", "upsampling_figure", "occlusion", "occlusion_image",
                    "grad_cam", "saliency_figure"],
    "minifcn.distributed": ["init", "SingleProcess", "MPICommunicator", "NCCLCommunicator",
                            "sync_batch_norm", "SyncBatchNorm2d", "GradientAllReduce",
                            "broadcast_state"],
    "minifcn.training": ["fit", "train_step", "parallel_train_step", "summed_loss", "validate"],
}
COMMANDS = ["minifcn.train", "minifcn.evaluate", "minifcn.predict", "minifcn.pretrain",
            "minifcn.export", "minifcn.gradcheck", "minifcn.models",
            "minifcn.experiments.skip_architectures", "minifcn.experiments.paper_ablations",
            "minifcn.experiments.from_classifier", "minifcn.experiments.pad_and_upsampling"]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_imports(module):
    m = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(m, name)]
    assert not missing, f"{module} lacks {missing}"


def test_minifcn_gradcheck_is_the_function_and_summary_the_models_one():
    import minifcn
    from minifcn.models import summary

    assert callable(minifcn.gradcheck) and minifcn.gradcheck.__name__ == "gradcheck"
    assert minifcn.summary is summary


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_help(command):
    run = subprocess.run([sys.executable, "-m", command, "--help"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "usage:" in run.stdout and not run.stderr
