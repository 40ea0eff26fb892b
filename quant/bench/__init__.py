"""Benchmark of full-precision and quantized pipelines: image quality, latency, memory.

Main entry points:

- :func:`run_benchmark` with :class:`BenchmarkConfig` and a list of :class:`Variant`
  (:func:`fp_variant`, :func:`quantized_variant`, or any name + pipeline factory);
- :func:`generate_images` (resumable generation), :func:`weight_bytes`, :func:`measure_unet`;
- metrics: :func:`frechet_distance` / :class:`FeatureStats`, :class:`CLIPFeatureAdapter`,
  :func:`psnr_per_image`, :func:`ssim_per_image`.
"""

from ..utils.distributed import Shard
from .clipscore import CLIPFeatureAdapter, CLIPScorer, load_clip
from .evaluate import MetricModels, evaluate_variants
from .fid import FeatureStats, fid_from_stats, frechet_distance, load_inception
from .generation import GenerationSettings, generate_images, image_path
from .metrics import ImageRewardModel, psnr_per_image, ssim_per_image
from .runner import BenchmarkConfig, run_benchmark
from .timing import UNetPerf, capture_unet_inputs, measure_unet, weight_bytes
from .variants import Variant, fp_variant, quantized_variant

__all__ = [
    "CLIPFeatureAdapter", "CLIPScorer", "load_clip", "Shard", "MetricModels",
    "evaluate_variants", "FeatureStats", "fid_from_stats", "frechet_distance", "load_inception",
    "GenerationSettings", "generate_images", "image_path", "ImageRewardModel", "psnr_per_image",
    "ssim_per_image", "BenchmarkConfig", "run_benchmark", "UNetPerf", "capture_unet_inputs",
    "measure_unet", "weight_bytes", "Variant", "fp_variant", "quantized_variant",
]
