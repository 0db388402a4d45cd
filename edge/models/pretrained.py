"""Backbone weights from elsewhere: torchvision's ImageNet weights (``--pretrained``) or any state dict file
(``--backbone-weights FILE.pth``), mapped key by key onto edge's own backbones.

edge's backbones (``edge.models.backbones``, ``edge.models.darknet``) are built from scratch, not from
torchvision modules, so a torchvision state dict is translated name by name:

    ResNet 18/34/50   conv1.* -> stem.0.*, bn1.* -> stem.1.*, layerK.i.downsample.* -> layerK.i.shortcut.*,
                      layerK.i.{conv,bn}N.* unchanged; fc.* (the classifier) is not used
    VGG16 (+ _bn)     features.N.* -> stage1.N.* up to conv4_3, stage2.(N - len(stage1)).* for conv5_x;
                      fc6/fc7 are decimated from classifier.0/classifier.3 as in the SSD paper (every 4th
                      filter, every 3rd tap of fc6's 7x7); classifier.6 (fc8) is not used

A file in edge's own names loads as well: a backbone's state dict, a whole detector's (``features.backbone.``
or ``backbone.`` prefixes) or an edge checkpoint (``{"model": state_dict, ...}``); so does a dict holding
the state dict under ``state_dict`` or ``model``, and keys prefixed ``module.`` (DDP).

torchvision publishes no MobileNetV1 and no Darknet weights (its MobileNets are V2/V3, another layout):
``--pretrained`` refuses those backbones, and any backbone at a width multiplier other than 1.0 (every
tensor would have another shape), naming the fix. ``BackboneLoad`` says what was loaded, and from where;
the training run writes it into the model card.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import ModelError, import_optional

log = logging.getLogger(__name__)

#: edge backbone name -> torchvision weights enum entry (``torchvision.models.get_weight`` name)
TORCHVISION_WEIGHTS: Dict[str, str] = {
    "vgg16": "VGG16_Weights.IMAGENET1K_V1",
    "vgg16_bn": "VGG16_BN_Weights.IMAGENET1K_V1",
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
}

#: backbones without published torchvision-format ImageNet weights, and why
NO_PUBLISHED_WEIGHTS: Dict[str, str] = {
    "mobilenet": "torchvision publishes no MobileNetV1 weights (its MobileNetV2/V3 have another layout)",
    "darknet19": "torchvision publishes no Darknet-19 weights (Darknet's own files are not torchvision state dicts)",
    "darknet53": "torchvision publishes no Darknet-53 weights (Darknet's own files are not torchvision state dicts)",
    "darknet-tiny": "torchvision publishes no yolov3-tiny trunk weights (Darknet's own files are not torchvision "
                    "state dicts)",
}

#: per family, a variant whose backbone has torchvision weights (the fix named when ``--pretrained`` refuses)
_VARIANT_WITH_WEIGHTS = {
    "ssd": "--model-arg variant=ssd300 (VGG16)",
    "retinanet": "--model-arg variant=r50-fpn (ResNet50), or --model-arg width=1.0 (ResNet18)",
    "yolov2": "--model ssd --model-arg variant=ssd300 or --model retinanet --model-arg variant=r50-fpn",
    "yolov3": "--model ssd --model-arg variant=ssd300 or --model retinanet --model-arg variant=r50-fpn",
    "yolov3-tiny": "--model ssd --model-arg variant=ssd300 or --model retinanet --model-arg variant=r50-fpn",
}

_DARKNETS = {"Darknet19": "darknet19", "Darknet53": "darknet53", "DarknetTiny": "darknet-tiny"}
_NAMED = 5  # tensor names shown in messages


@dataclass
class BackboneSpec:
    """Where a detector's backbone is: its name (a ``BACKBONES`` key or darknet19/darknet53/darknet-tiny),
    width multiplier, the module, and the prefix of its keys in the detector's state dict."""

    name: str
    width: float
    module: nn.Module
    prefix: str


@dataclass
class BackboneLoad:
    """What one load put into a backbone: ``source`` (``torchvision:<weights>`` or the file path), the file
    and its sha256, the number of tensors loaded of the backbone's ``total``, and the names of the backbone
    tensors the file lacked (``missing``) and of the file tensors not used (``unexpected``)."""

    source: str
    file: str
    sha256: str
    backbone: str
    loaded: int
    total: int
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    converted: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``loaded N tensors into the X backbone from SOURCE; M missing (...), U unexpected (...)``."""
        return summary_line(self.to_card())

    def to_card(self) -> Dict[str, Any]:
        """The model card's ``backbone_weights`` entry (plain data)."""
        return {
            "source": self.source,
            "file": self.file,
            "sha256": self.sha256,
            "backbone": self.backbone,
            "loaded": self.loaded,
            "total": self.total,
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "missing_names": self.missing[:10],
            "unexpected_names": self.unexpected[:10],
            "converted": list(self.converted),
        }


def summary_line(entry: Dict[str, Any]) -> str:
    """A model card's ``backbone_weights`` entry (``BackboneLoad.to_card``) as one line:
    ``loaded N tensors into the X backbone (of T) from SOURCE; M missing (a, b), U unexpected (c, d)``."""

    def counted(what: str) -> str:
        count, names = int(entry.get(what) or 0), list(entry.get(f"{what}_names") or [])[:_NAMED]
        shown = ", ".join(names) + (", ..." if count > len(names) else "")
        return f"{count} {what} ({shown})" if count else f"0 {what}"

    return (f"loaded {entry.get('loaded')} tensors into the {entry.get('backbone')} backbone (of "
            f"{entry.get('total')}) from {entry.get('source')}; {counted('missing')}, {counted('unexpected')}")


# ------------------------------------------------------------------------------------ the backbone


def backbone_of(model: nn.Module) -> BackboneSpec:
    """The backbone of an edge detector (SSD/RetinaNet: ``features.backbone``; YOLO: ``backbone``)."""
    config = dict(getattr(model, "config", {}) or {})
    features = getattr(model, "features", None)
    if isinstance(features, nn.Module) and isinstance(getattr(features, "backbone", None), nn.Module):
        return BackboneSpec(str(config.get("backbone", "")), float(config.get("width", 1.0)), features.backbone,
                            "features.backbone.")
    module = getattr(model, "backbone", None)
    if isinstance(module, nn.Module) and type(module).__name__ in _DARKNETS:
        return BackboneSpec(_DARKNETS[type(module).__name__], float(config.get("width", 1.0)), module, "backbone.")
    raise ModelError(f"{type(model).__name__} has no backbone edge knows how to load weights into; expected an "
                     "edge detector (ssd, retinanet, yolov2, yolov3, yolov3-tiny)")


def backbone_modules(model: nn.Module) -> nn.Module:
    """The backbone module of an edge detector (what ``--freeze-backbone`` freezes)."""
    return backbone_of(model).module


# ------------------------------------------------------------------------------- key translation


def _strip_own(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    for prefix in ("features.backbone.", "backbone."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _resnet_name(key: str) -> str:
    if key.startswith("conv1."):
        return "stem.0." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "stem.1." + key[len("bn1."):]
    return key.replace(".downsample.", ".shortcut.")


def _vgg_name(key: str, split: int) -> str:
    found = re.match(r"features\.(\d+)\.(.+)$", key)
    if not found:
        return key
    n, rest = int(found.group(1)), found.group(2)
    return f"stage1.{n}.{rest}" if n < split else f"stage2.{n - split}.{rest}"


def _vgg_fc(backbone: nn.Module) -> Tuple[Optional[str], Optional[str]]:
    """Our fc6 (the dilated conv) and fc7 (the last conv) module names in ``stage2``."""
    convs = [(f"stage2.{i}", m) for i, m in enumerate(getattr(backbone, "stage2", [])) if isinstance(m, nn.Conv2d)]
    fc6 = next((name for name, m in convs if m.dilation[0] > 1), None)
    return fc6, (convs[-1][0] if convs and convs[-1][0] != fc6 else None)


def _decimated_fc(state: Dict[str, torch.Tensor], spec: BackboneSpec,
                  targets: Dict[str, torch.Tensor]) -> Dict[str, Tuple[str, torch.Tensor]]:
    """SSD's fc6/fc7 from VGG16's classifier.0/3 [4096, 25088] / [4096, 4096]: every 4th filter, fc6's 7x7
    taps at 0, 3, 6 -> [1024, 512, 3, 3] and [1024, 1024, 1, 1]. Only where the shapes are exactly these."""
    fc6, fc7 = _vgg_fc(spec.module)
    out: Dict[str, Tuple[str, torch.Tensor]] = {}
    w6, b6 = state.get("classifier.0.weight"), state.get("classifier.0.bias")
    if fc6 and w6 is not None and b6 is not None and tuple(w6.shape) == (4096, 512 * 7 * 7):
        w = w6.reshape(4096, 512, 7, 7)[::4, :, ::3, ::3]
        if tuple(w.shape) == tuple(targets[f"{fc6}.weight"].shape):
            out[f"{fc6}.weight"], out[f"{fc6}.bias"] = ("classifier.0.weight", w), ("classifier.0.bias", b6[::4])
    w7, b7 = state.get("classifier.3.weight"), state.get("classifier.3.bias")
    if fc7 and w7 is not None and b7 is not None and tuple(w7.shape) == (4096, 4096):
        w = w7[::4, ::4].reshape(1024, 1024, 1, 1)
        if tuple(w.shape) == tuple(targets[f"{fc7}.weight"].shape):
            out[f"{fc7}.weight"], out[f"{fc7}.bias"] = ("classifier.3.weight", w), ("classifier.3.bias", b7[::4])
    return out


def map_state_dict(state: Dict[str, torch.Tensor], spec: BackboneSpec
                   ) -> Tuple[Dict[str, Tuple[str, torch.Tensor]], List[str], List[str]]:
    """Translate a state dict (torchvision's or edge's names) onto the backbone's own keys.

    Returns (backbone key -> (file key, tensor), unexpected file keys, converted backbone keys). Shapes are
    not checked here (``load_backbone_state`` does).
    """
    targets = spec.module.state_dict()
    split = len(getattr(spec.module, "stage1", []))
    mapped: Dict[str, Tuple[str, torch.Tensor]] = {}
    unexpected: List[str] = []
    converted: List[str] = []
    if spec.name.startswith("vgg"):
        for key, item in _decimated_fc(state, spec, targets).items():
            mapped[key] = item
            converted.append(key)
    used = {source for source, _ in mapped.values()}
    for key, tensor in state.items():
        if key in used:
            continue
        own = _strip_own(key)
        candidates = [own]
        if spec.name.startswith("resnet"):
            candidates.append(_resnet_name(own))
        elif spec.name.startswith("vgg"):
            candidates.append(_vgg_name(own, split))
        name = next((c for c in candidates if c in targets), None)
        if name is None or name in mapped:
            unexpected.append(key)
        else:
            mapped[name] = (key, tensor)
    return mapped, unexpected, converted


# ------------------------------------------------------------------------------------------ loading


def load_backbone_state(model: nn.Module, state: Dict[str, torch.Tensor], *, source: str, file: str = "",
                        sha256: str = "") -> BackboneLoad:
    """Map ``state`` onto ``model``'s backbone and load it; raise ModelError on a shape mismatch (naming the
    tensor and both shapes) or when no tensor fits (the wrong file for this backbone)."""
    spec = backbone_of(model)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    mapped, unexpected, converted = map_state_dict(tensors, spec)
    targets = spec.module.state_dict()
    what = f"the {spec.name or type(spec.module).__name__} backbone (width {spec.width:g})"
    wrong = [(name, key, tuple(t.shape)) for name, (key, t) in mapped.items()
             if tuple(t.shape) != tuple(targets[name].shape)]
    if wrong:
        name, key, shape = wrong[0]
        shown = f"{key!r} (as {name!r})" if key != name else repr(name)
        raise ModelError(
            f"{source}: tensor {shown} has shape {list(shape)} but {what} expects "
            f"{list(targets[name].shape)} ({len(wrong)} of {len(mapped)} matched tensors differ in shape); the file "
            f"holds weights of another backbone or width: pass weights of a {spec.name} at width {spec.width:g}")
    if not mapped:
        first = ", ".join(list(tensors)[:_NAMED]) or "none"
        fix = (f"torchvision's {spec.name} state dict or " if spec.name in TORCHVISION_WEIGHTS else "")
        raise ModelError(
            f"{source}: none of its {len(tensors)} tensors fit {what} (its first keys: {first}); expected "
            f"{fix}edge's own backbone keys (e.g. {next(iter(targets))}); pass the weights file for this backbone")
    merged = dict(targets)
    merged.update({name: t for name, (_, t) in mapped.items()})
    with torch.no_grad():
        spec.module.load_state_dict(merged, strict=True)
    report = BackboneLoad(source=source, file=file, sha256=sha256, backbone=spec.name, loaded=len(mapped),
                          total=len(targets), missing=[k for k in targets if k not in mapped],
                          unexpected=unexpected, converted=converted)
    log.info("%s", report.summary())
    if converted:
        log.info("converted %s from the classifier (decimated as in the SSD paper)", ", ".join(converted))
    return report


def file_sha256(path: Union[str, "os.PathLike[str]"]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from ``path`` (weights-only ``torch.load``): plain, or under ``state_dict`` / ``model``."""
    p = Path(path)
    try:
        data = torch.load(str(p), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"--backbone-weights {p}: no such file; pass the path of a .pth state dict") from None
    except OSError as exc:
        raise ModelError(f"--backbone-weights {p}: cannot read it ({exc.strerror or exc}); check the path and "
                         "its permissions") from None
    except Exception as exc:  # unpickling errors have many types
        detail = " ".join(str(exc).split())[:160]
        raise ModelError(f"--backbone-weights {p}: not a weights-only torch file ({type(exc).__name__}: {detail}); "
                         "expected a state dict saved with torch.save(model.state_dict(), FILE)") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not any(isinstance(v, torch.Tensor) for v in data.values()):
        found = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
        raise ModelError(f"--backbone-weights {p}: holds no state dict (found {found}); expected a dict of "
                         "tensors, or a dict with one under 'state_dict' or 'model'")
    return data


def load_backbone_weights(model: nn.Module, path: str) -> BackboneLoad:
    """``--backbone-weights FILE``: read any state dict, map its keys, load it into the backbone."""
    state = read_state_dict(path)
    return load_backbone_state(model, state, source=str(path), file=str(Path(path).resolve()),
                               sha256=file_sha256(path))


def torchvision_weights_name(model: nn.Module) -> str:
    """The torchvision weights for the model's backbone (e.g. ``ResNet50_Weights.IMAGENET1K_V1``), or a
    ModelError saying why there are none and what to do instead."""
    spec = backbone_of(model)
    arch = str(getattr(model, "arch", ""))
    other = _VARIANT_WITH_WEIGHTS.get(arch, "a variant whose backbone has torchvision weights")
    if spec.name not in TORCHVISION_WEIGHTS:
        why = NO_PUBLISHED_WEIGHTS.get(spec.name, f"no torchvision weights are known for backbone {spec.name!r}")
        raise ModelError(f"--pretrained: {arch} uses a {spec.name} backbone, and {why}; train from scratch, pass "
                         f"--backbone-weights FILE.pth (a state dict in edge's key names), or use {other}")
    if spec.width != 1.0:
        raise ModelError(f"--pretrained: {arch}'s {spec.name} backbone has width multiplier {spec.width:g}; ImageNet "
                         f"weights exist for width 1.0 only (every tensor has another shape at {spec.width:g}); use "
                         f"--model-arg width=1.0, or {other}")
    return TORCHVISION_WEIGHTS[spec.name]


def load_pretrained_backbone(model: nn.Module, *, progress: bool = False, timeout_s: float = 60.0) -> BackboneLoad:
    """``--pretrained``: torchvision's ImageNet weights for the backbone, through torchvision's weights API
    (torch.hub's cache ``torch.hub.get_dir()/checkpoints``, downloaded there with the hash check when absent).

    A file placed in the cache by hand is not hash-checked by torch.hub; its sha256 is compared with the hash
    prefix in its name here, and a mismatch is a warning (the card records the sha256 either way).
    """
    name = torchvision_weights_name(model)
    tv = import_optional("torchvision.models", "torchvision", "--pretrained",
                         "install it: pip install 'edge-detect[torchvision]'")
    weights = tv.get_weight(name)
    file_name = os.path.basename(urlparse(weights.url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # a stalled connection fails instead of hanging the run
    try:
        state = weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except OSError as exc:  # URLError, HTTPError, timeouts, no route
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise ModelError(
            f"--pretrained: cannot download {name} from {weights.url} ({reason}); on a machine without network "
            f"access, fetch that URL elsewhere and place the file as {cached} (torch.hub's checkpoint cache), or "
            "pass --backbone-weights FILE.pth") from None
    except Exception as exc:  # a hash mismatch (RuntimeError), a damaged cached file (unpickling errors)
        raise ModelError(f"--pretrained: {name} from {weights.url} failed its check or did not load "
                         f"({' '.join(str(exc).split())[:200]}); delete {cached} if it is there and retry") from None
    finally:
        socket.setdefaulttimeout(previous)
    sha = file_sha256(cached) if cached.exists() else ""
    expected = re.search(r"-([a-f0-9]{6,})\.", file_name)
    if sha and expected and not sha.startswith(expected.group(1)):
        log.warning("%s: its sha256 %s... does not start with %s, the hash in its name: it is not the file "
                    "torchvision published (loading it anyway; the model card records its sha256)",
                    cached, sha[:12], expected.group(1))
    return load_backbone_state(model, state, source=f"torchvision:{name}", file=str(cached), sha256=sha)
