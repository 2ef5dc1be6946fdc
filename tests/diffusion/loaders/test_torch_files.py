"""PyTorch files (.ckpt/.pt/.pth/.bin) read without torch: the same tensors as torch.load, the
same weights as the model's .safetensors, malicious pickles refused before anything runs."""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
from ldm_files import (
    CLIP_TINY,
    UNET_TINY,
    VAE_TINY,
    assert_component,
    diffusers,
    randomized,
    safetensors_torch,
    torch,
    transformers,
    write_ldm,
)

from diffusion.cli.main import main
from diffusion.loaders import WeightsError, load_pipeline_weights, load_vae_weights
from diffusion.loaders.formats.torch_file import TorchFile
from diffusion.loaders.formats.torch_pickle import safe_loads
from diffusion.lora import LoraFile
from diffusion.text.embeddings import EmbeddingFile

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`

FORMATS = {"zip": True, "legacy": False, "tar": None}  # tar: torch < 0.4, written by hand


def _save(obj, path, fmt):
    if fmt == "tar":
        from test_torch_tar_and_mmap import _save_tar

        return _save_tar(obj, path)
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_and_view_reads_as_torch_load(tmp_path, fmt):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(7, 11, generator=gen)
    tensors = collections.OrderedDict(
        f32=torch.randn(3, 5, generator=gen), f16=torch.randn(4, 3, generator=gen).half(),
        bf16=torch.randn(2, 7, generator=gen).bfloat16(),
        f64=torch.randn(5, generator=gen).double(),
        i64=torch.randint(-9, 9, (6,), generator=gen), i32=torch.arange(5, dtype=torch.int32),
        u8=torch.arange(9, dtype=torch.uint8), flag=torch.tensor([True, False]),
        view=base[1:6, 2:9], transposed=base.t(), strided=base[::2, ::3],
        param=torch.nn.Parameter(torch.randn(3, 2, generator=gen)), scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 3))
    path = _save({"state_dict": tensors, "global_step": np.int64(7), "epoch": 3,
                  "loops": {"ratio": np.float64(0.5)}, "seen": {1, 2}}, tmp_path / "m.ckpt", fmt)
    file = TorchFile(path)
    assert file.keys() == list(tensors)
    for key, tensor in tensors.items():
        want = tensor.detach().float() if tensor.dtype == torch.bfloat16 else tensor.detach()
        got = file.read(key)
        assert got.dtype == want.numpy().dtype and file.shape(key) == tuple(tensor.shape), key
        np.testing.assert_array_equal(got, want.numpy(), err_msg=key)
    np.testing.assert_array_equal(file.read("view", rows=(1, 3)), base[2:4, 2:9].numpy())
    assert file.dtype("bf16") == "BF16" and file.dtype("i64") == "I64"


@pytest.fixture(scope="module")
def tiny():
    """The three components of an SD1 checkpoint (not all of `tiny_models`: seconds on CI)."""
    return SimpleNamespace(
        unet=randomized(diffusers.UNet2DConditionModel(**UNET_TINY), 1),
        vae=randomized(diffusers.AutoencoderKL(**VAE_TINY), 4),
        text=randomized(transformers.CLIPTextModel(transformers.CLIPTextConfig(**CLIP_TINY)), 5))


@pytest.mark.parametrize("fmt", FORMATS)
def test_checkpoint_loads_like_its_safetensors(tmp_path, tiny, fmt):
    ckpt = write_ldm(tmp_path / "m.safetensors", tiny.unet, tiny.vae, tiny.text)
    # a trainer's checkpoint: the weights under "state_dict", beside training state
    _save({"state_dict": ckpt, "global_step": np.int64(10), "epoch": 1},
          tmp_path / "m.ckpt", fmt)
    safe, pickled = (load_pipeline_weights(tmp_path / name) for name in ("m.safetensors", "m.ckpt"))
    assert pickled.info == safe.info
    for name in ("unet", "vae", "text_encoder"):
        want = getattr(safe, name)
        assert getattr(pickled, name).config == want.config
        assert_component(getattr(pickled, name), {k: want[k] for k in want})
    # a separate VAE in .pt, bare LDM names (vae-ft-mse-840000-ema-pruned.ckpt's layout)
    vae = {k[len("first_stage_model."):]: v for k, v in ckpt.items()
           if k.startswith("first_stage_model.")}
    _save({"state_dict": vae}, tmp_path / "m.vae.pt", fmt)
    assert_component(load_vae_weights(tmp_path / "m.vae.pt"), {k: safe.vae[k] for k in safe.vae})


def test_diffusers_bin_folder(tmp_path, tiny):
    tiny.vae.save_pretrained(tmp_path / "vae", safe_serialization=False)
    assert (tmp_path / "vae" / "diffusion_pytorch_model.bin").is_file()
    weights = load_vae_weights(tmp_path / "vae")
    assert_component(weights, {k: v.numpy() for k, v in tiny.vae.state_dict().items()})


def test_embedding_and_lora_pickles(tmp_path):
    gen = torch.Generator().manual_seed(1)
    vectors = torch.randn(3, 8, generator=gen)
    # textual inversion's .pt: {"string_to_token": ..., "string_to_param": {"*": vectors}, ...}
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors},
                "name": "style", "step": 500}, tmp_path / "style.pt")
    np.testing.assert_array_equal(EmbeddingFile(tmp_path / "style.pt").tensors[""],
                                  vectors.numpy())
    layer = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
    lora = {f"{layer}.lora_down.weight": torch.randn(4, 64, generator=gen),
            f"{layer}.lora_up.weight": torch.randn(64, 4, generator=gen),
            f"{layer}.alpha": torch.tensor(2.0)}
    torch.save(lora, tmp_path / "old.pt")
    safetensors_torch.save_file(lora, tmp_path / "old.safetensors")
    pickled, safe = LoraFile.load(tmp_path / "old.pt"), LoraFile.load(tmp_path / "old.safetensors")
    assert pickled.modules.keys() == safe.modules.keys()
    for key, module in safe.modules.items():
        got = pickled.modules[key]
        assert (got.kind, got.alpha, got.tensors.keys()) == (module.kind, module.alpha,
                                                             module.tensors.keys())
        for name, value in module.tensors.items():
            np.testing.assert_array_equal(got.tensors[name], value)


def test_convert_command_writes_the_same_tensors_atomically(tmp_path, capsys):
    gen = torch.Generator().manual_seed(2)
    tensors = {"w": torch.randn(5, 3, generator=gen), "b": torch.randn(7, generator=gen).bfloat16(),
               "h": torch.randn(2, 2, generator=gen).half(), "n": torch.arange(4)}
    torch.save({"state_dict": tensors, "step": 3}, tmp_path / "m.ckpt")
    assert main(["convert", str(tmp_path / "m.ckpt"), str(tmp_path / "m.safetensors")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "m.safetensors")
    got = safetensors_torch.load_file(tmp_path / "m.safetensors")
    assert got.keys() == tensors.keys()
    for key, tensor in tensors.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key
    # a refused source and a bad target leave no file behind
    (tmp_path / "evil.ckpt").write_bytes(b"cos\nsystem\n(S'touch ran'\ntR.")
    for argv, message in ((["evil.ckpt", "evil.safetensors"], "refusing to load"),
                          (["m.ckpt", "m.txt"], "must be named"),
                          (["m.ckpt", "m.ckpt.safetensors"], None)):
        code = main(["convert", *(str(tmp_path / a) for a in argv)])
        if message:
            assert code == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "evil.ckpt", "m.ckpt", "m.ckpt.safetensors", "m.safetensors"]


# -- malicious pickles ----------------------------------------------------------------------------

def _payloads(marker):
    """(name, pickle bytes) that would create `marker` if anything in them ran."""
    command = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w')"

    class Reduce:
        def __init__(self, func, *args):
            self.func, self.args = func, args

        def __reduce__(self):
            return self.func, self.args

    import builtins
    import subprocess
    out = []
    for protocol in (0, 2, 4):  # GLOBAL (0, 2) and STACK_GLOBAL (4) before a REDUCE
        out.append((f"os.system-p{protocol}", pickle.dumps(Reduce(os.system, command),
                                                           protocol=protocol)))
        out.append((f"eval-p{protocol}", pickle.dumps(Reduce(builtins.eval, code),
                                                      protocol=protocol)))
        out.append((f"Popen-p{protocol}", pickle.dumps(
            Reduce(subprocess.Popen, ["touch", str(marker)]), protocol=protocol)))
    arg = pickle.dumps(command, protocol=0)[:-1]  # the string alone, no STOP
    out.append(("INST", b"(" + arg + b"ios\nsystem\n."))
    out.append(("OBJ", b"(cos\nsystem\n" + arg + b"o."))
    # inside a tensor's storage reference: persistent id ('storage', <os.system(...)>, ...)
    out.append(("persistent-id", b"(Vstorage\ncos\nsystem\n(" + arg + b"tRV0\nVcpu\nI1\ntQ."))
    # a benign-looking state dict whose second value calls eval
    out.append(("nested", pickle.dumps({"a": 1, "b": Reduce(builtins.eval, code)}, protocol=2)))
    return out


def test_malicious_pickles_are_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    payloads = _payloads(marker)
    for name, data in payloads:
        with pytest.raises(WeightsError, match=r"refusing to load: its pickle calls "
                           r"'(os|posix|nt|builtins|__builtin__|subprocess|commands)\.(system|eval|Popen)'"):
            safe_loads(data, lambda pid: None, name)
    # the same inside files: a legacy pickle file and a zip whose data.pkl is replaced
    real = io.BytesIO()
    torch.save({"w": torch.ones(2)}, real)
    for name, data in payloads:
        (tmp_path / f"{name}.pt").write_bytes(data)
        with zipfile.ZipFile(real) as src, zipfile.ZipFile(tmp_path / f"{name}.ckpt", "w") as dst:
            for info in src.infolist():
                dst.writestr(info, data if info.filename.endswith("data.pkl") else
                             src.read(info))
        for suffix in (".pt", ".ckpt"):
            with pytest.raises(WeightsError, match="refusing to load"):
                TorchFile(tmp_path / f"{name}{suffix}")
    assert not marker.exists()


# -- damaged and random input ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def valid_pickles():
    """The pickles of a small legacy checkpoint (its storages' bytes cut off)."""
    out = io.BytesIO()
    torch.save({"state_dict": {"a": torch.randn(2, 3), "b": torch.arange(4)[1:],
                               "c": torch.randn(3).half()}, "step": np.int64(3)},
               out, _use_new_zipfile_serialization=False)
    return out.getvalue()


@settings(max_examples=150, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_and_mutated_pickles_never_crash(tmp_path_factory, valid_pickles, data):
    raw = data.draw(st.one_of(
        st.binary(max_size=200),
        st.lists(st.tuples(st.integers(0, len(valid_pickles) - 1), st.integers(0, 255)),
                 min_size=1, max_size=6).map(lambda edits: _mutate(valid_pickles, edits)),
        st.integers(1, len(valid_pickles)).map(lambda n: valid_pickles[:n])))
    path = tmp_path_factory.mktemp("fuzz") / "m.pt"
    path.write_bytes(raw)
    try:
        file = TorchFile(path)
        for key in file.keys():
            file.read(key)
    except WeightsError:
        pass  # a clear error is the expected answer to most damaged files


def _mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for where, value in edits:
        out[where] = value
    return bytes(out)


def test_sizes_from_the_pickle_are_checked_before_reading(tmp_path):
    """A tensor whose pickle claims more elements than its storage holds is an error, found
    before anything of that size is allocated."""
    saved = io.BytesIO()
    torch.save({"w": torch.ones(4)}, saved)
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(tmp_path / "big.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):  # storage and size 4 -> 4e12 elements
                big = pickle.dumps(4_000_000_000_000, protocol=2)[2:-1]
                data = data.replace(b"K\x04t", big + b"t").replace(b"K\x04\x85", big + b"\x85")
            dst.writestr(info, data)
    file = TorchFile(tmp_path / "big.pt")
    assert file.shape("w") == (4_000_000_000_000,)
    with pytest.raises(WeightsError, match="past the end of its storage record"):
        file.read("w")
