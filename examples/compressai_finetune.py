"""Fine-tune a CompressAI codec against JND targets, then measure it with real bitstreams.

    python examples/compressai_finetune.py --train ../shared/data/train/CBSD68 \\
        --eval ../shared/data/test/Kodak24 --estimator my-jnd.safetensors \\
        --checkpoint bmshj2018-hyperprior-3.pth.tar --steps 200

The loop is CompressAI's training step with one change, marked below. For real runs (epochs,
test set, checkpoints, resume, offline JND) use ``python -m jndplug.integrations.compressai.train``;
see docs/compressai.md.
"""

import argparse
import sys

import torch
from compressai.losses import RateDistortionLoss

import jndplug
from jndplug.imageio import array_to_tensor, list_images, read_image
from jndplug.integrations.compressai import build_model, default_lambda, load_weights, read_checkpoint, state_dict_of
from jndplug.integrations.compressai.evaluate import evaluate_image
from jndplug.integrations.compressai.steps import make_optimizers, train_step

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--train", required=True, help="folder of training photographs")
parser.add_argument("--eval", required=True, help="folder of evaluation photographs (e.g. Kodak24)")
parser.add_argument("--estimator", default="default", help="JND estimator: pretrained name or .safetensors")
parser.add_argument("--checkpoint", help="CompressAI weights to start from (the zoo cannot download here)")
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--patch", type=int, default=256, help="training crop side")
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
args = parser.parse_args()

MODEL, QUALITY = "bmshj2018-hyperprior", 3
LR = 1e-5  # a small lr: fine-tuning, not training
model = build_model(MODEL, QUALITY)
if args.checkpoint:
    load_weights(model, state_dict_of(read_checkpoint(args.checkpoint)), MODEL, QUALITY)
else:
    print(f"warning: no --checkpoint, so {MODEL} starts from random weights. This script fine-tunes: "
          f"{args.steps} steps at learning rate {LR:g} do not train a codec from scratch, so expect "
          "reconstructions far from the originals (and the bpp/PSNR lines below to say so). Give --checkpoint "
          f"with CompressAI's {MODEL} quality {QUALITY} weights (bmshj2018-hyperprior-3-*.pth.tar), or "
          "train from scratch with `python -m jndplug.integrations.compressai.train` (docs/compressai.md).",
          file=sys.stderr)
model.to(args.device)
target = jndplug.JNDTarget(args.estimator)
criterion = RateDistortionLoss(lmbda=default_lambda(QUALITY))  # lmbda * 255^2 * MSE + bpp
optimizers = make_optimizers(model, lr=LR, aux_lr=1e-3)

photos = [array_to_tensor(read_image(p)) for p in list_images(args.train)]


def random_crops(n: int, size: int) -> torch.Tensor:
    crops = []
    for i in torch.randint(len(photos), (n,)).tolist():
        h, w = photos[i].shape[-2:]
        top, left = torch.randint(h - size + 1, ()).item(), torch.randint(w - size + 1, ()).item()
        crops.append(photos[i][:, top:top + size, left:left + size])
    return torch.stack(crops).to(args.device)


model.train()
for step in range(args.steps):
    x = random_crops(args.batch, args.patch)
    jnd = target(x)  # <- the one change: the reconstruction is compared with the JND image of x
    losses = train_step(model, criterion, optimizers, x, jnd, clip_max_norm=1.0)
    if step % 20 == 0 or step == args.steps - 1:
        print(f"step {step}: loss {losses['loss']:.4f}, {losses['bpp_loss']:.3f} bpp, "
              f"MSE to JND {losses['mse_loss']:.2e}")

# Real entropy coding; distortion is measured against the ORIGINAL images, never the JND ones.
model.eval()
model.update(force=True)
for path in list_images(args.eval):
    record, _bitstream, _decoded = evaluate_image(model, read_image(path), path.name)
    print(f"{path.name}: {record['bpp']:.3f} bpp, PSNR {record['psnr']:.2f} dB")
