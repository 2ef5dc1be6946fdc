"""The cache directory: what one process learns that the next can reuse, so that a second cold
start does not redo it. Nothing in it is needed for a correct result; delete it at any time.

Where: $AVX_GPU_CACHE_DIR, else $XDG_CACHE_HOME/avx-gpu, else ~/.cache/avx-gpu. Inside:

- `autotune-<key>.json`: the autotuner's choices (gpucore._autotune);
- `mesa/`: Mesa's shader cache (lavapipe, llvmpipe and Mesa's GPU drivers), and `nvidia/`,
  NVIDIA's: each driver's compiled pipelines, pointed here (MESA_SHADER_CACHE_DIR,
  __GL_SHADER_DISK_CACHE_PATH) before the first adapter is listed, unless already set, so that
  one `clear()` gives a truly cold start. Neither wgpu-native nor wgpudawn 0.32 lets the
  application keep pipelines itself (wgpu-native has no `create_pipeline_cache`; wgpudawn does
  not declare Dawn's `DawnCacheDeviceDescriptor`): the drivers' caches are what persists
  compiled kernels.

Every entry is keyed by what makes it valid (runtime, adapter, driver, package version and
the kernel sources' hash, `source_hash()`): a stale entry is never read, only replaced. Files
are written atomically (a temporary file renamed over the old one), so two processes writing
at once leave one whole file; a file that cannot be read is ignored with a warning and rebuilt.
Our own files are kept under $AVX_GPU_CACHE_MAX_MB (default 256) by `trim()`, oldest first;
the drivers' caches keep to their own limits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

from ._shaders import shader_roots_found

__all__ = ["DIR_ENV", "MAX_ENV", "cache_dir", "clear", "forget_source_hash",
           "point_driver_caches", "read_json", "size_limit", "source_hash", "trim", "usage",
           "write_json"]

DIR_ENV = "AVX_GPU_CACHE_DIR"
MAX_ENV = "AVX_GPU_CACHE_MAX_MB"
DEFAULT_MAX_MB = 256
# The drivers' caches: env var naming the folder, our subfolder, env var of their size cap.
DRIVER_CACHES = (("MESA_SHADER_CACHE_DIR", "mesa", "MESA_SHADER_CACHE_MAX_SIZE"),
                 ("__GL_SHADER_DISK_CACHE_PATH", "nvidia", None))

_hashes: dict[tuple[str, ...], str] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    """The cache directory (it may not exist yet)."""
    if given := os.environ.get(DIR_ENV, "").strip():
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "avx-gpu"


def size_limit() -> int:
    """Bytes our own files may take ($AVX_GPU_CACHE_MAX_MB, default 256 MB)."""
    text = os.environ.get(MAX_ENV, "").strip()
    try:
        mb = float(text) if text else DEFAULT_MAX_MB
    except ValueError:
        mb = -1.0
    if mb < 0:
        warnings.warn(f"{MAX_ENV}={text!r} is not a size in MB; using {DEFAULT_MAX_MB}",
                      stacklevel=2)
        mb = DEFAULT_MAX_MB
    return int(mb * 1024 * 1024)


def point_driver_caches() -> None:
    """Point Mesa's and NVIDIA's shader caches into the cache directory, where the user has
    not placed them (call before the first adapter is listed: drivers read this at start)."""
    root = cache_dir()
    for variable, folder, cap in DRIVER_CACHES:
        if variable not in os.environ:
            try:  # the drivers do not make it (Mesa: "Failed to create ... disabling")
                (root / folder).mkdir(parents=True, exist_ok=True)
            except OSError:
                continue  # an unwritable place: the driver's own default stays
            os.environ[variable] = str(root / folder)
            if cap is not None and cap not in os.environ:
                os.environ[cap] = f"{max(size_limit() // (1024 * 1024), 1)}M"


def source_hash() -> str:
    """A hash of every WGSL file under the registered shader roots: a changed kernel source
    makes every entry keyed by it a miss (generated kernels change with the package version)."""
    roots = shader_roots_found()
    names = tuple(str(r) for r in roots)
    with _lock:
        if names in _hashes:
            return _hashes[names]
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(Path(str(root)).rglob("*.wgsl")):
            digest.update(str(path.relative_to(str(root))).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    found = digest.hexdigest()[:16]
    with _lock:
        _hashes[names] = found
    return found


def forget_source_hash() -> None:
    """Hash the shader files again on next use (tests edit them)."""
    with _lock:
        _hashes.clear()


def read_json(path: Path, key: dict[str, Any], what: str) -> dict[str, Any] | None:
    """The payload of `path` when it was written for `key`; None when it is missing, written
    for another key (stale: silently), or unreadable (corrupt, truncated: with a warning)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring the {what} cache {path} ({exc}); it is rebuilt", stacklevel=3)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
        warnings.warn(f"ignoring the {what} cache {path} (not a cache entry); it is rebuilt",
                      stacklevel=3)
        return None
    if data.get("key") != key:
        return None
    return data["payload"]


def write_json(path: Path, key: dict[str, Any], payload: dict[str, Any]) -> bool:
    """Write `payload` under `key` atomically, then trim the cache; False (with a warning)
    when the directory cannot be written: the cache is an optimization, never required."""
    text = json.dumps({"key": key, "payload": payload}, indent=1, sort_keys=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        warnings.warn(f"could not write the cache file {path} ({exc}); continuing without it",
                      stacklevel=3)
        return False
    trim()
    return True


def _own_files(root: Path) -> list[Path]:
    drivers = {folder for _, folder, _ in DRIVER_CACHES}
    found = []
    for path in root.iterdir() if root.is_dir() else ():
        if path.is_file() and not path.name.endswith(".tmp"):
            found.append(path)
        elif path.is_dir() and path.name not in drivers:
            found += [p for p in path.rglob("*") if p.is_file()]
    return found


def trim(limit: int | None = None) -> int:
    """Delete our own files, least recently written first, until they take at most `limit`
    bytes (size_limit()); returns how many were deleted. The drivers' folders are theirs."""
    limit = size_limit() if limit is None else limit
    files = []
    for path in _own_files(cache_dir()):
        try:
            stat = path.stat()
        except OSError:
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = 0
    for _, size, path in sorted(files):
        if total <= limit:
            break
        path.unlink(missing_ok=True)
        total -= size
        removed += 1
    return removed


def usage() -> dict[str, int]:
    """Bytes in the cache directory by part: "own" files, and each driver's folder."""
    root = cache_dir()
    parts = {"own": sum(p.stat().st_size for p in _own_files(root))}
    for _, folder, _ in DRIVER_CACHES:
        where = root / folder
        parts[folder] = sum(p.stat().st_size for p in where.rglob("*") if p.is_file())
    return parts


def clear() -> int:
    """Delete the cache directory's contents (ours and the drivers' folders in it); returns the
    bytes freed. The next process starts cold."""
    root = cache_dir()
    freed = sum(usage().values()) if root.is_dir() else 0
    for path in root.iterdir() if root.is_dir() else ():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return freed
