"""``--model-arg`` options in one place (``edge.models.options``): ``edge train --help-model`` lists each
family's options with their defaults and variants, and every family refuses an unknown option with the same
helpful error."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("torch")

from edge.cli.main import main  # noqa: E402
from edge.errors import ModelError  # noqa: E402
from edge.models import build_model  # noqa: E402
from edge.models.ssd import SSDConfig  # noqa: E402

FAMILIES = ("ssd", "yolov2", "yolov3", "yolov3-tiny", "retinanet")
SMALL = {"ssd": {"width": 0.25}, "yolov2": {"width": 0.25}, "yolov3": {"width": 0.25, "depth": 0.34},
         "yolov3-tiny": {"width": 0.25}, "retinanet": {"width": 0.25, "fpn_channels": 16, "head_depth": 1}}


def test_help_model_lists_a_familys_options_with_defaults_and_exits_0_without_data(capsys):
    assert main(["train", "--model", "yolov3-tiny", "--help-model"]) == 0
    out = capsys.readouterr().out
    out, recipe = out.split("\ndefault recipe ")
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert out.startswith("yolov3-tiny: --model-arg KEY=VALUE")
    assert set(lines) == {"input_size", "anchors", "width", "normalization", "loss"}
    assert lines["width"].split()[1] == "1.0"
    assert "set by edge train from --imgsz" in lines["input_size"]
    assert '"obj_weight": 0.1' in lines["loss"] and '"obj_norm": "positives"' in lines["loss"]  # YoloLossConfig's
    assert recipe.startswith("yolov3-tiny/v1") and "imgsz 320, epochs 60" in recipe and "width=0.5" in recipe
    assert main(["train", "--model", "ssd", "--help-model"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["variant"].split()[1] == SSDConfig.variant and "one of mobile, ssd300" in lines["variant"]
    assert lines["backbone"].split()[1] == "mobilenet" and "ssd300: vgg16" in lines["backbone"]


def test_help_model_without_model_lists_every_family(capsys):
    assert main(["train", "--help-model"]) == 0
    out = capsys.readouterr().out
    assert [block.split(":")[0] for block in out.strip().split("\n\n")] == list(FAMILIES)


@pytest.mark.parametrize("arch", FAMILIES)
def test_an_unknown_option_gets_the_same_error_in_every_family(arch):
    with pytest.raises(ModelError) as err:
        build_model(arch, num_classes=2, input_size=(64, 64), foo=1, **SMALL[arch])
    msg = str(err.value)
    assert msg.startswith(f"unknown --model-arg foo for {arch}; options: ")
    assert msg.endswith(f"(edge train --model {arch} --help-model)")
    assert "width" in msg.split("options: ")[1] and "input_size" not in msg and "num_classes" not in msg
    # a model card's config (every option, resolved) still rebuilds the model
    model = build_model(arch, num_classes=2, input_size=(64, 64), **SMALL[arch])
    assert build_model(arch, **model.config).config == model.config


def test_an_unknown_loss_key_is_named_as_an_option_too():
    with pytest.raises(ModelError, match=r"^unknown --model-arg loss\.obj_wieght for yolov3-tiny; options: .*"
                                         r"loss\.obj_weight"):
        build_model("yolov3-tiny", num_classes=2, input_size=(64, 64), loss={"obj_wieght": 2.0})


def test_cli_train_refuses_an_unknown_model_arg_in_one_line(tmp_path, caplog):
    from tests.train.test_loop import tiny_dataset_yaml

    yaml = tiny_dataset_yaml(tmp_path)
    rc = main(["train", "--model", "yolov3-tiny", "--data", str(yaml), "--imgsz", "64", "--epochs", "1",
               "--out", str(tmp_path / "run"), "--model-arg", "foo=1", "--threads", "1"])
    assert rc == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(m.startswith("unknown --model-arg foo for yolov3-tiny; options: anchors, width") for m in errors), \
        errors
