"""python -m minifcn.experiments.backbones: the paper's Table 1 in miniature (classifier top-1
against the mean IU of the FCN-8s fine-tuned from it)."""
import json

import numpy as np
import pytest
from PIL import Image

from minifcn import Tensor, no_grad
from minifcn.data import get_dataset, to_input
from minifcn.experiments import backbones
from minifcn.models import pretrained_classifier
from minifcn.models.classifier import shipped_classifier_path

pytestmark = pytest.mark.usefixtures("quiet")


def test_top1_is_the_share_of_images_classified_right():
    model = pretrained_classifier()
    data = get_dataset("shapes-cls", "val", n=12, size=224)
    right = 0
    for i in range(len(data)):  # one image at a time, the plain way
        image, label = data[i]
        with no_grad():
            scores = model(Tensor(to_input(image)[None])).data.reshape(-1)
        right += int(np.argmax(scores) == label.reshape(-1)[0])
    assert backbones.top1(shipped_classifier_path(), 12) == pytest.approx(right / 12)


def test_backbones_table_from_its_own_runs(tmp_path, capsys):
    cls = str(shipped_classifier_path())
    out = tmp_path / "bb"
    assert backbones.main([cls, "--labels", "shipped", "--iters", "2", "--seeds", "1",
                           "--n-val-cls", "10", "--n-val", "4", "--val-every", "2",
                           "--out", str(out)]) == 0
    scratch = json.loads((out / "scratch-seed0" / "config.json").read_text())
    tuned = json.loads((out / "cls0-seed0" / "config.json").read_text())
    assert scratch["init"] == "scratch" and tuned["init"] == "file" and tuned["init_from"] == cls
    # every other option the same: the start is the only difference
    assert {k: v for k, v in scratch.items() if k not in ("init", "init_from")} == \
        {k: v for k, v in tuned.items() if k not in ("init", "init_from")}
    text = (out / "backbones.md").read_text()
    for run, label, acc in (("scratch-seed0", "scratch (He init)", 1 / 16),
                            ("cls0-seed0", "shipped", backbones.top1(cls, 10))):
        records = [json.loads(line) for line in (out / run / "metrics.jsonl").read_text().split("\n")
                   if line.strip()]
        best = max(r["mean_iu"] for r in records)
        assert f"| {label} | {100 * acc:.1f} | {100 * best:.1f} |" in text
    assert Image.open(out / "backbones.png").size[0] > 200
    with pytest.raises(SystemExit):  # never into an --out that holds its runs
        backbones.main([cls, "--iters", "2", "--seeds", "1", "--out", str(out)])
    assert "already holds runs" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [(["missing.npz"], "no such file"),
                                         (["{cls}", "--seeds", "0"], "--seeds"),
                                         (["{cls}", "--labels", "a,b"], "--labels")])
def test_backbones_refuses_bad_options(argv, words, capsys):
    argv = [a.format(cls=shipped_classifier_path()) for a in argv]
    with pytest.raises(SystemExit) as e:
        backbones.main(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err
