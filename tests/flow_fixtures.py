"""Fixtures of the flow-model tests (FLUX, Chroma, SD3, Qwen-Image; a plugin of
tests/conftest.py): tiny random pipelines built once a run, and short prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def short_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """16 T5 tokens (not diffusers' 512, or SD3's 256): the tiny models' cost is the text
    length. A module whose every test wants it takes it with
    `pytestmark = pytest.mark.usefixtures("short_prompts")`."""
    from diffusion.pipelines.flow.flow_model import FlowModel

    monkeypatch.setattr(FlowModel, "max_sequence_length", 16)


# Tiny FLUX / SD3 pipelines shared by the flow-model test modules, each built once per run
# (building one with diffusers costs seconds on 2 cores); tests leave them as they found them.
@pytest.fixture(scope="session")
def tiny_flux_dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder's parent: `root / "flux"`, diffusers' FluxPipeline) of FLUX.1 dev's shape."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from flow_tiny import tiny_flux_pipeline

    root = tmp_path_factory.mktemp("tiny-flux-dev")
    return root, tiny_flux_pipeline(root, dev=True)


@pytest.fixture(scope="session")
def tiny_flux2_klein(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "flux2-klein"`, diffusers' Flux2KleinPipeline) of a step-distilled
    FLUX.2 klein of tiny random parts."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from flux2_tiny import tiny_flux2_pipeline

    root = tmp_path_factory.mktemp("tiny-flux2-klein")
    return root / "flux2-klein", tiny_flux2_pipeline(root, distilled=True)


@pytest.fixture(scope="session")
def tiny_flux2_dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "flux2-dev"`, diffusers' Flux2Pipeline) of FLUX.2 dev of tiny
    random parts (the guidance embedding on)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from flux2_dev_tiny import tiny_flux2_dev_pipeline

    root = tmp_path_factory.mktemp("tiny-flux2-dev")
    return root / "flux2-dev", tiny_flux2_dev_pipeline(root)


@pytest.fixture(scope="session")
def tiny_qwenimage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "qwen-image"`, diffusers' QwenImagePipeline) of tiny random parts."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from qwenimage_tiny import tiny_qwenimage_pipeline

    root = tmp_path_factory.mktemp("tiny-qwen-image")
    return root / "qwen-image", tiny_qwenimage_pipeline(root)


@pytest.fixture(scope="session")
def tiny_chroma(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder's parent: `root / "chroma"`, diffusers' ChromaPipeline)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from flow_tiny import tiny_chroma_pipeline

    root = tmp_path_factory.mktemp("tiny-chroma")
    return root, tiny_chroma_pipeline(root)


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder's parent: `root / "sd3"`, diffusers' StableDiffusion3Pipeline)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from flow_tiny import tiny_sd3_pipeline

    root = tmp_path_factory.mktemp("tiny-sd3")
    return root, tiny_sd3_pipeline(root)


@pytest.fixture(scope="session")
def tiny_krea2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "krea-2"`, diffusers' Krea2Pipeline) of tiny random parts (the
    CLI's and the server's tests)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from krea2_tiny import tiny_krea2_pipeline

    root = tmp_path_factory.mktemp("tiny-krea-2")
    return root / "krea-2", tiny_krea2_pipeline(root)


@pytest.fixture(scope="session")
def tiny_qwenimage21(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "qwen-image-2.1"`, diffusers' QwenImage21Pipeline) of tiny random
    parts (the CLI's and the server's tests)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from qwenimage21_tiny import tiny_qwenimage21_pipeline

    root = tmp_path_factory.mktemp("tiny-qwen-image-21")
    return root / "qwen-image-2.1", tiny_qwenimage21_pipeline(root)


@pytest.fixture(scope="session")
def tiny_kandinsky5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "kandinsky5"`, diffusers' Kandinsky5T2IPipeline) of tiny random
    parts (the CLI's, the single file's and the server's tests), the reference told the tiny
    VAE's factor (it assumes 8) and given the tests' 40 x 24 as a resolution (it snaps any
    other size to its nearest trained one)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from kandinsky5_text_tiny import tiny_kandinsky5_pipeline

    root = tmp_path_factory.mktemp("tiny-kandinsky5")
    reference = tiny_kandinsky5_pipeline(root)
    reference.vae_scale_factor_spatial = 2
    reference.resolutions = [(40, 24)]
    return root / "kandinsky5", reference


@pytest.fixture(scope="session")
def tiny_kandinsky5_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "kandinsky5-video"`, diffusers' Kandinsky5T2VPipeline) of tiny
    random parts (kandinsky5_video_tiny; the pipeline's and the server's tests)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from kandinsky5_video_tiny import tiny_kandinsky5_video_pipeline

    root = tmp_path_factory.mktemp("tiny-kandinsky5-video")
    return root / "kandinsky5-video", tiny_kandinsky5_video_pipeline(root)


@pytest.fixture(scope="session")
def tiny_kandinsky5_i2v(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "kandinsky5-i2v"`, diffusers' Kandinsky5I2VPipeline) of
    kandinsky5_video_tiny's parts."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from kandinsky5_video_tiny import tiny_kandinsky5_video_pipeline

    root = tmp_path_factory.mktemp("tiny-kandinsky5-i2v")
    return root / "kandinsky5-i2v", tiny_kandinsky5_video_pipeline(
        root, "kandinsky5-i2v", "Kandinsky5I2VPipeline")


@pytest.fixture(scope="session")
def tiny_hunyuan_video15_i2v(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "hv15"`, diffusers' HunyuanVideo15ImageToVideoPipeline) of
    hunyuan_video15_pipe_tiny's parts: the pipeline test's and the server test's."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from hunyuan_video15_pipe_tiny import tiny_hunyuan_video15_pipeline

    root = tmp_path_factory.mktemp("tiny-hv15-i2v")
    return root / "hv15", tiny_hunyuan_video15_pipeline(root, image_to_video=True)


@pytest.fixture(scope="session")
def tiny_hunyuan_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "hunyuan-video"`, diffusers' HunyuanVideoPipeline) of
    hunyuan_video_pipe_tiny's parts: the pipeline test's and the server test's."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from hunyuan_video_pipe_tiny import tiny_hunyuan_video_pipeline

    root = tmp_path_factory.mktemp("tiny-hunyuan-video")
    return root / "hunyuan-video", tiny_hunyuan_video_pipeline(root)


@pytest.fixture(scope="session")
def tiny_lumina2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "lumina-2"`, diffusers' Lumina2Pipeline) of tiny random parts (the
    pipeline's, the CLI's and the server's tests)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from lumina2_pipeline_tiny import tiny_lumina2_pipeline

    root = tmp_path_factory.mktemp("tiny-lumina-2")
    return root / "lumina-2", tiny_lumina2_pipeline(root)


@pytest.fixture(scope="session")
def tiny_sana(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "sana"`, diffusers' SanaPipeline) of tiny random parts
    (sana_pipeline_tiny: the pipeline's, the CLI's and the server's tests)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from sana_pipeline_tiny import tiny_sana_pipeline

    root = tmp_path_factory.mktemp("tiny-sana")
    return root / "sana", tiny_sana_pipeline(root)


@pytest.fixture(scope="session")
def tiny_sana_sprint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "sana-sprint"`, diffusers' SanaSprintPipeline) of tiny random
    parts (sana_pipeline_tiny)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from sana_pipeline_tiny import tiny_sana_pipeline

    root = tmp_path_factory.mktemp("tiny-sana-sprint")
    return root / "sana-sprint", tiny_sana_pipeline(root, "sana-sprint", sprint=True)


@pytest.fixture(scope="session")
def tiny_hidream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "hidream"`, diffusers' HiDreamImagePipeline: HiDream-I1 Full's
    UniPC) of tiny random parts (hidream_pipe_tiny: the CLI's, the server's and the LoRA
    tests)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from hidream_pipe_tiny import tiny_hidream_pipeline

    root = tmp_path_factory.mktemp("tiny-hidream")
    return root / "hidream", tiny_hidream_pipeline(root)


@pytest.fixture(scope="session")
def tiny_hunyuan_video_i2v(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "hunyuan-video-i2v"`, diffusers' HunyuanVideoImageToVideoPipeline)
    of hunyuan_video_i2v_tiny's token_replace parts: the pipeline's and the CLI's tests."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from hunyuan_video_i2v_tiny import tiny_hunyuan_video_i2v_pipeline

    root = tmp_path_factory.mktemp("tiny-hunyuan-video-i2v")
    return root / "hunyuan-video-i2v", tiny_hunyuan_video_i2v_pipeline(root)


@pytest.fixture(scope="session")
def tiny_bria(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "bria"`, diffusers' BriaPipeline) of tiny random parts: the
    pipeline's, the CLI's, the LoRA's and the server's tests."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from bria_tiny import tiny_bria_pipeline

    root = tmp_path_factory.mktemp("tiny-bria")
    return root / "bria", tiny_bria_pipeline(root)


@pytest.fixture(scope="session")
def tiny_longcat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "longcat-image"`, diffusers' LongCatImagePipeline) of tiny random
    parts: the pipeline's, the CLI's, the LoRA's and the server's tests."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from longcat_image_tiny import tiny_longcat_pipeline

    root = tmp_path_factory.mktemp("tiny-longcat")
    return root / "longcat-image", tiny_longcat_pipeline(root)


@pytest.fixture(scope="session")
def tiny_ovis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "ovis-image"`, diffusers' OvisImagePipeline) of tiny random parts:
    the pipeline's, the CLI's and the server's tests."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from ovis_image_tiny import tiny_ovis_pipeline

    root = tmp_path_factory.mktemp("tiny-ovis")
    return root / "ovis-image", tiny_ovis_pipeline(root)


@pytest.fixture(scope="session")
def tiny_ernie(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "ernie-image"`, diffusers' ErnieImagePipeline) of tiny random
    parts: the pipeline's, the CLI's and the server's tests."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from ernie_image_tiny import tiny_ernie_pipeline

    root = tmp_path_factory.mktemp("tiny-ernie")
    return root / "ernie-image", tiny_ernie_pipeline(root)


@pytest.fixture(scope="session")
def tiny_cogview4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "cogview4"`, diffusers' CogView4Pipeline) of tiny random parts:
    the pipeline's, the CLI's and the server's tests."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from cogview4_tiny import tiny_cogview4_pipeline

    root = tmp_path_factory.mktemp("tiny-cogview4")
    return root / "cogview4", tiny_cogview4_pipeline(root)


@pytest.fixture(scope="session")
def tiny_qwenimage_edit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "qwen-edit"`, diffusers' QwenImageEditPipeline) of tiny random
    parts (its reference read at diffusers' area: see qwenedit_tiny.read_at_area)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from qwenedit_tiny import tiny_qwenimage_edit_pipeline

    root = tmp_path_factory.mktemp("tiny-qwen-edit")
    return root / "qwen-edit", tiny_qwenimage_edit_pipeline(root)


@pytest.fixture(scope="session")
def tiny_qwenimage_layered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "layered"`, diffusers' QwenImageLayeredPipeline) of tiny random
    parts (qwenimage_tiny.tiny_qwenimage_layered_pipeline)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from qwenimage_tiny import tiny_qwenimage_layered_pipeline

    root = tmp_path_factory.mktemp("tiny-qwen-layered")
    return root / "layered", tiny_qwenimage_layered_pipeline(root)


@pytest.fixture(scope="session")
def tiny_cosmos2_t2i(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "cosmos2-t2i"`, diffusers' Cosmos2TextToImagePipeline) of tiny
    random parts."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from cosmos_tiny import tiny_cosmos2_t2i_pipeline

    root = tmp_path_factory.mktemp("cosmos")
    return root / "cosmos2-t2i", tiny_cosmos2_t2i_pipeline(root)


@pytest.fixture(scope="session")
def tiny_pixart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "pixart"`, diffusers' PixArtSigmaPipeline) of tiny random parts
    (pixart_tiny: the pipeline's, the CLI's and the server's tests)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from pixart_tiny import tiny_pixart_pipeline

    root = tmp_path_factory.mktemp("tiny-pixart")
    return root / "pixart", tiny_pixart_pipeline(root)


@pytest.fixture(scope="session")
def tiny_auraflow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "auraflow"`, diffusers' AuraFlowPipeline) of tiny random parts:
    the pipeline's, the CLI's, the LoRA's and the server's tests."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from auraflow_tiny import tiny_auraflow_pipeline

    root = tmp_path_factory.mktemp("tiny-auraflow")
    return root / "auraflow", tiny_auraflow_pipeline(root)


@pytest.fixture(scope="session")
def tiny_ideogram4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "ideogram4"`, diffusers' Ideogram4Pipeline) of tiny random parts:
    the pipeline's, the CLI's, the server's and the step replay's tests."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from ideogram4_tiny import tiny_ideogram4_pipeline

    root = tmp_path_factory.mktemp("tiny-ideogram4")
    return root / "ideogram4", tiny_ideogram4_pipeline(root)


@pytest.fixture(scope="session")
def tiny_nucleus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "nucleus-moe"`, diffusers' NucleusMoEImagePipeline) of tiny random
    parts: the pipeline's, the CLI's and the server's tests."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from nucleus_tiny import tiny_nucleus_pipeline

    root = tmp_path_factory.mktemp("tiny-nucleus")
    return root / "nucleus-moe", tiny_nucleus_pipeline(root)


@pytest.fixture(scope="session")
def tiny_prx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder `root / "prx"`, diffusers' PRXPipeline) of tiny random parts: the
    pipeline's, the CLI's and the server's tests."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from prx_tiny import tiny_prx_pipeline

    root = tmp_path_factory.mktemp("tiny-prx")
    return root / "prx", tiny_prx_pipeline(root)
