"""A trained proxy for SDXL-Turbo: small enough to train and run on a CPU, so that image quality
under quantization is measured rather than assumed.

- :mod:`.scenes`: the procedural dataset (coloured shapes, captions that state them);
- :mod:`.model`: the tiny-shaped pipeline (epsilon from t=999, the BOS outlier, the noise
  pass-through it starts training from), where its shipped weights live, text conditioning;
- :mod:`.train`, :mod:`.build`: the training recipe (``scripts/train_proxy.py``); :mod:`.state`:
  its safetensors checkpoints (no pickle);
- :mod:`.classifier`: the attribute classifier that judges generated content;
- :mod:`.metrics`: content accuracy (with a Wilson interval), FID in the classifier's features,
  SQNR/PSNR/SSIM, the high-frequency quality score, and :func:`~quant.proxy.metrics.evaluate`;
- :mod:`.ablation`: MixDQ's ablation (``mixdq benchmark --model proxy``);
- :mod:`.report`, :mod:`.grid`: the full-precision numbers and the captioned grid.

Load it like any model: ``load_fp_pipeline("proxy")`` or ``mixdq ... --model proxy``.
"""
