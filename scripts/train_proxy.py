"""Train the proxy model (attribute classifier, VAE, UNet + text encoders) and ship it.

Reproduces the shipped weights in quant/proxy/weights/ (same seed, same thread count):

    OMP_NUM_THREADS=1 python scripts/train_proxy.py

about 50 minutes on one CPU core (classifier 3, VAE 14, UNet 30 min on a shared 2-core machine).
Resumable: run the same command again after an interruption (safetensors checkpoints in --work).
"""

import argparse
import json

import torch

from quant.proxy.build import STAGES, train_proxy
from quant.proxy.classifier import ClassifierConfig
from quant.proxy.train import TrainConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/proxy_train",
                   help="checkpoint folder, resumed from if present (default: runs/proxy_train)")
    p.add_argument("--out", default=None, help="output folder (default: quant/proxy/weights)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--vae-steps", type=int, default=TrainConfig.vae_steps)
    p.add_argument("--unet-steps", type=int, default=TrainConfig.unet_steps)
    p.add_argument("--bos-peak", type=float, default=TrainConfig.bos_peak,
                   help="the BOS token's input-embedding outlier (default %(default)s)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(seed=args.seed, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
                      bos_peak=args.bos_peak)
    summary = train_proxy(args.work, cfg, ClassifierConfig(), out_root=args.out,
                          stages=tuple(args.stages))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
