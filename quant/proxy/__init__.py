"""A trained proxy for SDXL-Turbo: small enough to train and run on a CPU, so that image quality
under quantization is measured rather than assumed.

- :mod:`.scenes`: the procedural dataset (coloured shapes, captions that state them);
- :mod:`.model`: the tiny-shaped pipeline, where its shipped weights live, text conditioning;
- :mod:`.train`, :mod:`.build`: the training recipe (``scripts/train_proxy.py``);
- :mod:`.classifier`: the attribute classifier that judges generated content;
- :mod:`.metrics`: content accuracy, FID in the classifier's features, SQNR/PSNR/SSIM,
  and :func:`~quant.proxy.metrics.evaluate`;
- :mod:`.report`, :mod:`.grid`: the full-precision numbers and the captioned grid.

Load it like any model: ``load_fp_pipeline("proxy")`` or ``mixdq ... --model proxy``.
"""
