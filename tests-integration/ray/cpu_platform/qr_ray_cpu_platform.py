"""Test fixture: vLLM's CPU platform, able to run on Ray.

vLLM 0.32's ``CpuPlatform.ray_device_key`` is empty, which vLLM reads as "this
platform cannot use Ray": tensor parallelism over Ray stops with ``current
platform cpu does not support ray`` and ``--data-parallel-backend ray`` with
``No  found in Ray cluster``. This subclass only names a Ray resource.

The key is ``"GPU"``, and the Ray cluster declares as many (absent) GPUs as
vLLM ranks (``ray start --num-gpus N``). Ray's other names do not work: Ray
refuses ``"CPU"`` in the ``resources=`` argument that vLLM uses for a
non-``"GPU"`` key, and a custom resource is missing from
``ray.get_runtime_context().get_accelerator_ids()``, which vLLM's Ray workers
index with the key (``KeyError``). Ray sets ``CUDA_VISIBLE_DEVICES`` in the
workers holding a "GPU"; CPU-only torch ignores it.

It is loaded through vLLM's own extension point for platforms, the
``vllm.platform_plugins`` entry point (``activate`` below), and only where the
folder holding this module and its ``.dist-info`` is on ``PYTHONPATH``: the
Ray cluster and the drivers of tests-integration/ray. No vLLM code is patched.
"""

from vllm.platforms.cpu import CpuPlatform

RAY_DEVICE_KEY = "GPU"


class RayCpuPlatform(CpuPlatform):
    """vLLM's CPU platform with a Ray resource key."""

    ray_device_key = RAY_DEVICE_KEY


def activate() -> str:
    """The ``vllm.platform_plugins`` entry point: this platform's qualified name."""
    return f"{__name__}.RayCpuPlatform"
