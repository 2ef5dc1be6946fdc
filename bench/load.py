"""python -m bench load: many clients against one server, and a worker killed mid-job.

A real server (`python -m diffusion serve`, the bundled model unless BENCH_LOAD_MODEL names
one) in a process of its own. Phase 1, load: BENCH_LOAD_CLIENTS clients (64) each send
BENCH_LOAD_REQUESTS txt2img requests (8) of BENCH_LOAD_STEPS steps (20) at BENCH_LOAD_SIZE
pixels (128) one after another, seeds drawn from a few whose
pictures were made alone first: every answer must be 200 and the very picture of its seed.
The server's host memory (RSS of it and its worker processes) and device memory (where
/sdapi/v1/memory reports it) are sampled throughout: flat means the last sample is within
BENCH_LOAD_GROWTH_MIB (64) of the sample taken after the first picture of every client.
Phase 2, faults (with BENCH_LOAD_DEVICES, e.g. "0,1": one worker process per GPU): while
requests that save their pictures run, one worker process is killed with SIGKILL; every
answer must be 200 or 503 (the killed job), the other workers' jobs must finish (some 200s),
every saved file a whole PNG, every 200's pictures on disk, and the killed worker must come
back: a new worker process, and requests answered 200 after it. On CPU adapters:
`BENCH_LOAD_DEVICES=0,0 python -m bench load --quick` (two processes on one adapter);
BENCH_LOAD_FAULTS=0 leaves phase 2 out. Phase 1 prints its progress every tenth of the
requests (to stderr).

    BENCH_LOAD_DEVICES=0,1 python -m bench load --json bench/results/load-h100.json
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["hammer", "host_rss_mib", "run", "server_process"]

PROMPT = "a red circle on a blue background"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def host_rss_mib(pid: int) -> float:
    """RSS of `pid` and its descendants in MiB (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines()
                              if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def worker_pids(pid: int) -> list[int]:
    """The worker processes of the server `pid` (its multiprocessing children)."""
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"multiprocessing" in command and b"resource_tracker" not in command:
                pids.append(int(child))
    return pids


@contextmanager
def server_process(args: Sequence[str], port: int, timeout: float = 600) -> Iterator[Any]:
    """`python -m diffusion serve --port PORT ARGS` until it answers; yields the Popen."""
    import httpx

    process = subprocess.Popen([sys.executable, "-m", "diffusion", "serve", "--port",
                                str(port), *args])
    try:
        end = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/sdapi/v1/options", timeout=5).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise RuntimeError("the server did not answer in time")
            time.sleep(0.5)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _picture(response: Any) -> bytes:
    import base64
    import io

    import numpy as np
    from PIL import Image

    data = base64.b64decode(response.json()["images"][0])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).tobytes()


def hammer(url: str, body: dict[str, Any], seeds: Sequence[int], *, clients: int,
           requests: int, sample: Callable[[], None] | None = None) -> dict[str, Any]:
    """`clients` threads each sending `requests` txt2img `body`s (seeds taken in turn from
    `seeds`, whose pictures are first made one at a time): counts of answers that were not 200
    and of pictures that differ from their seed's, pictures per second, and the memory samples
    `sample()` took after each client's first picture and at the end."""
    import httpx

    # One client for all threads: a fresh httpx client per request builds an SSL context
    # (~20 ms holding the GIL), which capped the clients' rate rather than the server's.
    with httpx.Client(timeout=600,
                      limits=httpx.Limits(max_connections=clients + 1)) as http:
        return _hammer(http, url, body, seeds, clients, requests, sample)


def _hammer(http: Any, url: str, body: dict[str, Any], seeds: Sequence[int], clients: int,
            requests: int, sample: Callable[[], None] | None) -> dict[str, Any]:
    import httpx

    def post(seed: int) -> Any:
        return http.post(url + "/sdapi/v1/txt2img", json={**body, "seed": seed})

    reference = {seed: _picture(post(seed)) for seed in seeds}
    counts = {"errors": 0, "wrong": 0, "done": 0}
    lock = threading.Lock()
    warm = threading.Barrier(clients + 1)
    total = clients * requests

    def client(k: int) -> None:
        for r in range(requests):
            seed = seeds[(k + r) % len(seeds)]
            try:
                response = post(seed)
                ok = response.status_code == 200
                right = ok and _picture(response) == reference[seed]
            except httpx.HTTPError:
                ok = right = False
            with lock:
                counts["done"] += 1
                counts["errors"] += not ok
                counts["wrong"] += ok and not right
                if counts["done"] % max(1, total // 10) == 0:
                    seconds = time.perf_counter() - start
                    print(f"load: {counts['done']}/{total} answered in {seconds:.0f} s "
                          f"({counts['done'] / seconds:.1f}/s), {counts['errors']} errors, "
                          f"{counts['wrong']} wrong", file=sys.stderr, flush=True)
            if r == 0:
                warm.wait()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        running = [pool.submit(client, k) for k in range(clients)]
        warm.wait()
        if sample:
            sample()
        for done in running:
            done.result()
    seconds = time.perf_counter() - start
    if sample:
        sample()
    return {**counts, "seconds": seconds, "images_per_s": counts["done"] / seconds}


def _device_mib(url: str) -> float | None:
    import httpx

    cuda = httpx.get(url + "/sdapi/v1/memory", timeout=30).json().get("cuda", {})
    used = cuda.get("allocated", cuda.get("active", {})) if isinstance(cuda, dict) else {}
    current = used.get("current") if isinstance(used, dict) else None
    return None if current is None else current / 2**20


def _faults(url: str, server: Any, outputs: Path, body: dict[str, Any],
            steps: int, count: int) -> dict[str, Any]:
    """Requests that save their pictures, one worker process killed mid-job, then requests
    after its restart."""
    import httpx
    from PIL import Image

    def post(seed: int, save: bool = True) -> Any:
        return httpx.post(url + "/sdapi/v1/txt2img", timeout=600,
                          json={**body, "seed": seed, "steps": steps, "save_images": save})

    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(post, seed) for seed in range(100, 100 + count)]
        end = time.monotonic() + 300
        while (httpx.get(url + "/sdapi/v1/progress?skip_current_image=true", timeout=30)
               .json()["state"]["sampling_step"] < 1 and time.monotonic() < end):
            time.sleep(0.05)  # a job under way: the kill lands mid-job
        before = worker_pids(server.pid)
        victims = before[:1]
        if victims:
            os.kill(victims[0], signal.SIGKILL)
        codes = [a.result().status_code for a in answers]
    end = time.monotonic() + 300
    while len(set(worker_pids(server.pid)) - set(before)) < 1 and time.monotonic() < end:
        time.sleep(0.5)
    restarted = len(set(worker_pids(server.pid)) - set(before))
    with ThreadPoolExecutor(len(before) or 1) as pool:  # one each, the new process included
        after = [pool.submit(post, seed, False) for seed in range(120, 120 + 2 * len(before))]
        after_codes = [a.result().status_code for a in after]
    saved = [p for p in outputs.rglob("*.png")]
    whole = 0
    for path in saved:
        try:
            with Image.open(path) as image:
                image.load()
            whole += 1
        except OSError:
            pass
    return {"killed": len(victims), "ok": codes.count(200), "lost": codes.count(503),
            "other": len(codes) - codes.count(200) - codes.count(503),
            "saved": len(saved), "whole": whole, "restarted": restarted,
            "after": after_codes.count(200), "after_other": len(after) - after_codes.count(200)}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*, quick: bool = False) -> dict[str, Any]:
    clients = int(_env("BENCH_LOAD_CLIENTS", "4" if quick else "64"))
    requests = int(_env("BENCH_LOAD_REQUESTS", "2" if quick else "8"))
    size = int(_env("BENCH_LOAD_SIZE", "64" if quick else "128"))
    growth = float(_env("BENCH_LOAD_GROWTH_MIB", "64"))
    devices = os.environ.get("BENCH_LOAD_DEVICES")
    steps = int(_env("BENCH_LOAD_STEPS", "4" if quick else "20"))
    body = {"prompt": PROMPT, "steps": steps, "width": size, "height": size}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as scratch:
        outputs = Path(scratch)
        args = ["--outputs", str(outputs), "--queue-size", str(max(16, 2 * clients))]
        if os.environ.get("BENCH_LOAD_MODEL"):
            args += ["--model", os.environ["BENCH_LOAD_MODEL"]]
        if devices:
            args += ["--devices", devices]
        with server_process(args, port) as server:
            samples: list[tuple[float, float | None]] = []
            result = hammer(url, body, [1, 2, 3, 4], clients=clients, requests=requests,
                            sample=lambda: samples.append((host_rss_mib(server.pid),
                                                           _device_mib(url))))
            (host0, dev0), (host1, dev1) = samples
            flat = host1 - host0 <= growth and (dev0 is None or dev1 - dev0 <= growth)
            rows.append({"workload": f"load {clients} clients x {requests}", "size": size,
                         "steps": steps,
                         "devices": devices or "default", **{k: result[k] for k in (
                             "done", "errors", "wrong")},
                         "images/s": round(result["images_per_s"], 2),
                         "host MiB": f"{host0:.0f} -> {host1:.0f}",
                         "device MiB": "-" if dev0 is None else f"{dev0:.0f} -> {dev1:.0f}",
                         "ok": result["errors"] == 0 and result["wrong"] == 0 and flat})
            if devices and _env("BENCH_LOAD_FAULTS", "1") != "0":
                # quick: few and short, so that the last waits less than a request's timeout
                # on CPU adapters
                faults = _faults(url, server, outputs, body, *((20, 6) if quick else (100, 16)))
                rows.append({"workload": "kill -9 of a worker mid-job", "size": size,
                             "devices": devices, "done": faults["ok"] + faults["lost"],
                             "errors": faults["other"] + faults["after_other"],
                             "wrong": faults["saved"] - faults["whole"], "images/s": "-",
                             "host MiB": f"saved {faults['saved']}", "device MiB": "-",
                             "restarted": faults["restarted"],
                             "after restart": f"{faults['after']} of "
                                              f"{faults['after'] + faults['after_other']}",
                             "ok": faults["killed"] == 1 and faults["other"] == 0
                             and faults["ok"] > 0 and faults["restarted"] >= 1
                             and faults["after_other"] == 0
                             and faults["whole"] == faults["saved"] >= faults["ok"]})
    columns = ["workload", "size", "steps", "devices", "done", "errors", "wrong", "images/s",
               "host MiB", "device MiB", "restarted", "after restart", "ok"]
    return {"benchmark": "load", "rows": rows, "columns": columns}
