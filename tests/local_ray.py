"""A local Ray for the tests that need one (test_ray_engine, test_ray_embeddings, test_compare_ray)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def local_ray(env_vars: dict | None = None):
    """A local Ray on this machine (2 CPUs, no dashboard, its own temp dir) for the block;
    yields its address. `env_vars` reach the workers (Ray's runtime_env)."""
    import ray

    temp = tempfile.mkdtemp(prefix="cb-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)  # short socket paths
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level="ERROR", log_to_driver=False,
             **({"runtime_env": {"env_vars": env_vars}} if env_vars else {}))
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
