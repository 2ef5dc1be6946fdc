"""`python -m diffusion serve --ray ADDRESS`: the server as a Ray Serve application on a Ray
cluster, one replica per GPU (diffusion.server.ray_app)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..server.settings import ServerSettings

__all__ = ["add_ray_options", "serve_on_ray"]


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("give a JSON object, e.g. "
                                         '\'{"min_replicas": 1, "max_replicas": 8}\'')
    return value


def add_ray_options(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group("Ray Serve (pip install avx-gpu[ray])")
    group.add_argument("--ray", metavar="ADDRESS",
                       help="run on the Ray cluster at ADDRESS ('auto': the one this machine "
                            "belongs to; 'local': start one here), one replica per GPU, behind "
                            "Ray Serve's HTTP proxy on --host/--port")
    group.add_argument("--ray-replicas", type=int, metavar="N",
                       help="replicas (default: the cluster's GPUs, at least 1)")
    group.add_argument("--ray-autoscaling", type=_json_object, metavar="JSON",
                       help="Ray Serve's autoscaling_config instead of a fixed count, e.g. "
                            '\'{"min_replicas": 1, "max_replicas": 8, '
                            '"target_ongoing_requests": 4}\'')
    group.add_argument("--ray-gpus-per-replica", type=float, default=1.0, metavar="G",
                       help="GPUs each replica holds (1; 0: CPU-only replicas on software "
                            "adapters)")


def serve_on_ray(args: argparse.Namespace, settings: ServerSettings) -> int:
    """Deploy replicas of create_app(settings) (each registering `settings.upscaler_dir`)
    behind Ray Serve's proxy on settings.host and settings.port, and block until
    interrupted; returns the exit status."""
    try:
        import ray
        from ray import serve

        from ..server.ray_app import deployment
        from ..server.ray_plan import replica_count
    except ImportError as exc:
        print(f"error: --ray: {exc}", file=sys.stderr)
        return 2
    ray.init(address=None if args.ray == "local" else args.ray)
    replicas = replica_count(args.ray_replicas, ray.cluster_resources())
    app = deployment(settings, replicas=replicas, autoscaling=args.ray_autoscaling,
                     gpus_per_replica=args.ray_gpus_per_replica)
    host, port = settings.host, settings.port
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="diffusion", route_prefix="/", blocking=False)
    print(f"serving on Ray at http://{host}:{port}/ (API: /sdapi/v1); "
          f"{args.ray_autoscaling or replicas} replicas", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
