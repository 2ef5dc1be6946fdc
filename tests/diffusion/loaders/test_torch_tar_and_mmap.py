"""PyTorch files beyond what today's torch.save writes: the tar format of torch < 0.4 (written
here by hand, the way torch 0.3's serialization._save wrote it, and checked against torch.load,
which still reads it), and tensors taken from a memory mapping of the file instead of read."""

from __future__ import annotations

import collections
import io
import mmap
import pickle
import tarfile
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusion.loaders import WeightsError
from diffusion.loaders.formats.torch_file import TorchFile

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`


def _save_tar(obj, path, *, views=(), sys_info=None, tensors_pickle=None):
    """`obj` saved as torch 0.3 did (a tar of sys_info, pickle, tensors, storages). Tensors are
    the persistent ids str(key); each tensor's storage is its own untyped storage, except those
    named in `views`, whose storage becomes a storage view into it (torch 0.3's
    `_root_storage`), the tensor's offset moving into the view."""
    tensors, storages, storage_views, named = {}, {}, [], {}

    def storage_key(tensor):
        key = tensor.untyped_storage().data_ptr()
        storages.setdefault(key, tensor)
        return key

    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if isinstance(value, torch.Tensor):
                tensors[id(value)] = value
                return str(id(value))
            return None

    for name, tensor in obj["state_dict"].items():
        named[id(tensor)] = name
    pickled = io.BytesIO()
    Pickler(pickled, protocol=2).dump(obj)
    meta = io.BytesIO()
    pickle.dump(len(tensors), meta, protocol=2)
    for key, tensor in tensors.items():
        root, offset = storage_key(tensor), tensor.storage_offset()
        if named.get(key) in views:  # a storage of its own: a view of the root's elements
            view_key, numel = key + 1, tensor.untyped_storage().nbytes() // tensor.element_size()
            storage_views.append((view_key, root, offset, numel - offset))
            root, offset = view_key, 0
        tensor_type = getattr(torch, _STORAGE_TYPES[tensor.dtype].replace("Storage", "Tensor"))
        pickle.dump((key, root, tensor_type), meta, protocol=2)
        meta.write(np.array([tensor.dim(), 0], "<i4").tobytes())
        meta.write(np.array([*tensor.shape, *tensor.stride(), offset], "<i8").tobytes())
    data = io.BytesIO()
    pickle.dump(len(storages), data, protocol=2)
    for key, tensor in storages.items():
        raw = torch.empty(0, dtype=torch.uint8).set_(tensor.untyped_storage()).numpy().tobytes()
        pickle.dump((key, "cpu", getattr(torch, _STORAGE_TYPES[tensor.dtype])), data, protocol=2)
        data.write(np.array([len(raw) // tensor.element_size()], "<i8").tobytes() + raw)
    pickle.dump(storage_views, data, protocol=2)
    info = sys_info or {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}
    members = {"sys_info": pickle.dumps(info, protocol=2), "pickle": pickled.getvalue(),
               "tensors": tensors_pickle or meta.getvalue(), "storages": data.getvalue()}
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(content)
            tar.addfile(entry, io.BytesIO(content))
    return path


_STORAGE_TYPES = {torch.float32: "FloatStorage", torch.float16: "HalfStorage",
                  torch.bfloat16: "BFloat16Storage", torch.float64: "DoubleStorage",
                  torch.int64: "LongStorage", torch.int32: "IntStorage",
                  torch.uint8: "ByteStorage", torch.bool: "BoolStorage"}


def _tensors():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(7, 11, generator=gen)
    return collections.OrderedDict(
        f32=torch.randn(3, 5, generator=gen), f16=torch.randn(4, 3, generator=gen).half(),
        bf16=torch.randn(2, 7, generator=gen).bfloat16(),
        f64=torch.randn(5, generator=gen).double(),
        i64=torch.randint(-9, 9, (6,), generator=gen), u8=torch.arange(9, dtype=torch.uint8),
        flag=torch.tensor([True, False]), whole=base, view=base[1:6, 2:9],
        transposed=base.t(), strided=base[::2, ::3], scalar=torch.tensor(2.5))


def test_tar_format_reads_as_torch_load(tmp_path):
    tensors = _tensors()
    path = _save_tar({"state_dict": tensors, "epoch": 3}, tmp_path / "old.pth",
                     views=("view", "strided"))
    reference = torch.load(path, weights_only=False)["state_dict"]  # torch's _legacy_load
    file = TorchFile(path)
    assert file.keys() == list(tensors) == list(reference)
    for key, tensor in tensors.items():
        assert torch.equal(reference[key], tensor), key  # the fixture is what torch reads
        want = tensor.float() if tensor.dtype == torch.bfloat16 else tensor
        np.testing.assert_array_equal(file.read(key), want.numpy(), err_msg=key)
        assert file.shape(key) == tuple(tensor.shape)
    np.testing.assert_array_equal(file.read("strided", rows=(1, 3)), tensors["strided"][1:3])


def test_tar_format_refuses_code_and_damage(tmp_path):
    marker = tmp_path / "ran"
    tensors = {"w": torch.ones(2)}
    evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    tensor_meta = pickle.dumps(1, protocol=2) + evil
    for name, kwargs in (("sys", {"sys_info": None}), ("meta", {"tensors_pickle": tensor_meta})):
        path = _save_tar({"state_dict": tensors}, tmp_path / f"{name}.pt", **kwargs)
        if name == "sys":  # the object's own pickle replaced
            with tarfile.open(path) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            members["pickle"] = evil
            with tarfile.open(path, "w:") as tar:
                for member, content in members.items():
                    entry = tarfile.TarInfo(member)
                    entry.size = len(content)
                    tar.addfile(entry, io.BytesIO(content))
        with pytest.raises(WeightsError, match=r"refusing to load: its pickle calls 'os.system'"):
            TorchFile(path)
    assert not marker.exists()
    big_endian = _save_tar({"state_dict": tensors}, tmp_path / "be.pt",
                           sys_info={"little_endian": False})
    with pytest.raises(WeightsError, match="big-endian"):
        TorchFile(big_endian)
    good = _save_tar({"state_dict": tensors}, tmp_path / "good.pt")
    with tarfile.open(good) as tar:
        end = tar.getmember("storages").offset_data + 40  # inside the storage's bytes
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:end])
    with pytest.raises(WeightsError, match=r"cut\.pt: damaged tar container.*re-download"):
        TorchFile(tmp_path / "cut.pt")


@pytest.mark.parametrize("fmt", ["zip", "legacy", "tar"])
def test_tensors_are_views_of_a_memory_mapping(tmp_path, fmt):
    """view() aliases the file's mapping (no bytes copied); read() allocates one tensor at a
    time, never the file: tracemalloc sees numpy's and Python's allocations, not the mapping."""
    gen = torch.Generator().manual_seed(4)
    tensors = {f"w{i}": torch.randn(256, 1024, generator=gen) for i in range(4)}  # 1 MiB each
    tensors["half"] = torch.randn(64, 32, generator=gen).half()[:, ::2]
    path = tmp_path / "m.pt"
    if fmt == "tar":
        _save_tar({"state_dict": tensors}, path)
    else:
        torch.save({"state_dict": tensors}, path, _use_new_zipfile_serialization=fmt == "zip")
    file = TorchFile(path)
    tracemalloc.start()
    try:
        views = {key: file.view(key) for key in file.keys()}
        mapped = tracemalloc.get_traced_memory()[1]
        for key in file.keys():
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            got = file.read(key)
            grew = tracemalloc.get_traced_memory()[1] - before
            assert grew < got.nbytes + 2**14, f"reading {key} ({got.nbytes} B) took {grew} B"
            np.testing.assert_array_equal(got, tensors[key].numpy())
            del got
    finally:
        tracemalloc.stop()
    assert mapped < 2**16, f"taking views allocated {mapped} bytes"
    whole = np.frombuffer(file._mapping(), np.uint8)
    assert isinstance(file._mapping(), mmap.mmap)
    for key, view in views.items():
        assert not view.flags.writeable and np.shares_memory(view, whole), key
        np.testing.assert_array_equal(view, tensors[key].numpy(), err_msg=key)
    unmapped = TorchFile(path)  # where mmap fails (a pipe, an odd filesystem): bytes are read
    unmapped._unmappable = True
    for key, tensor in tensors.items():
        assert unmapped.view(key).base is not None and unmapped._mapping() is None
        np.testing.assert_array_equal(unmapped.read(key), tensor.numpy(), err_msg=key)


@pytest.fixture(scope="module")
def tar_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("tar") / "seed.pt"
    tensors = {"a": torch.randn(2, 3), "b": torch.arange(5)[1:], "c": torch.randn(3).half()}
    return _save_tar({"state_dict": tensors, "step": 3}, path, views=("b",)).read_bytes()


@settings(max_examples=100, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_tar_files_never_crash(tmp_path_factory, tar_bytes, data):
    """Bytes changed anywhere in a tar-format file: a clear error or tensors, nothing else."""
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(tar_bytes) - 1),
                                         st.integers(0, 255)), min_size=1, max_size=6))
    raw = bytearray(tar_bytes)
    for where, value in edits:
        raw[where] = value
    path = tmp_path_factory.mktemp("fuzz") / "m.pt"
    path.write_bytes(bytes(raw[:data.draw(st.integers(1, len(raw)))]))
    try:
        file = TorchFile(path)
        for key in file.keys():
            file.read(key)
    except WeightsError:
        pass
