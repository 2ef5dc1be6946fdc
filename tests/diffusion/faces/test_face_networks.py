"""RetinaFace (ResNet-50 and MobileNet-0.25) and the parsing net on gpustd against facexlib's
torch models on the same random weights: detections (boxes, scores, five landmarks) after
decoding and NMS, and the parsing logits."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")

import face_refs  # noqa: E402
from facexlib.detection.retinaface import RetinaFace as TorchRetinaFace  # noqa: E402

from diffusion.models.retinaface import RetinaFace, prior_boxes  # noqa: E402
from gpustd import Tensor  # noqa: E402


def random_retinaface(network: str, bgr: np.ndarray, seed: int = 0):
    """facexlib's RetinaFace with random weights whose BatchNorm statistics are those of `bgr`
    (one training-mode pass), so that activations stay near unit size through ResNet-50,
    and random affine BatchNorm parameters on top."""
    torch.manual_seed(seed)
    with face_refs.torchvision_stub():
        model = TorchRetinaFace(network_name=network, device="cpu")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
            torch.nn.init.normal_(module.weight, 1.0, 0.2)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(_input(bgr)))
    return model.eval()


def _input(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((bgr - np.float32([104, 117, 123])).transpose(2, 0, 1)[None])


@pytest.mark.nodevice
def test_prior_boxes_equal_facexlib():
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    want = PriorBox(generate_config("resnet50"), image_size=(70, 97)).forward().numpy()
    np.testing.assert_allclose(prior_boxes(70, 97), want, rtol=1e-6)


@pytest.mark.parametrize("network", ["resnet50", "mobile0.25"])
def test_retinaface_detections_equal_facexlib(first_device, network):
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (66, 83, 3)).astype(np.uint8)
    reference = random_retinaface(network, bgr.astype(np.float32))
    state = {f"module.{k}": v.numpy() for k, v in reference.state_dict().items()}
    ours = RetinaFace.from_state_dict(state, device=first_device)
    with torch.no_grad():
        want = reference.detect_faces(bgr, conf_threshold=0.6, nms_threshold=0.4)
    got = ours.detect(bgr, threshold=0.6, nms_threshold=0.4)
    assert 3 <= len(want) < 0.5 * len(prior_boxes(66, 83))  # NMS removed some, kept some
    assert got.shape == want.shape
    # the same detections; near-equal scores may be ordered either way
    distance = np.abs(want[:, None, :] - got[None, :, :]).max(axis=-1)
    nearest = distance.argmin(axis=1)
    assert sorted(nearest) == list(range(len(got)))
    assert distance.min(axis=1).max() < 0.03  # pixels (typically 1e-3), and score


def test_parsenet_equals_facexlib(first_device):
    from facexlib.parsing.parsenet import ParseNet as TorchParseNet

    from diffusion.models.parsenet import ParseNet

    torch.manual_seed(0)
    reference = TorchParseNet(in_size=64, out_size=64, min_feat_size=16, base_ch=32,
                              res_depth=2, ch_range=[32, 64])
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    for module in reference.modules():  # BatchNorm statistics of this picture, as above
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
            torch.nn.init.normal_(module.weight, 1.0, 0.2)
    reference.train()
    with torch.no_grad():
        reference(image)
        want = reference.eval()(image)[0].numpy()
    ours = ParseNet.from_state_dict({k: v.numpy() for k, v in reference.state_dict().items()},
                                    device=first_device)
    got = ours(Tensor.from_numpy(image.numpy(), device=first_device)).numpy()
    assert got.shape == want.shape == (1, 19, 64, 64)
    assert np.abs(got - want).max() / np.abs(want).max() < 2e-4
