"""The main job: trains a colorizer on the bundled photos in about 5 minutes on a 2-core CPU.

    make demo        # = python -m colorjax.train --config configs/demo.py --workdir runs/demo
    python -m colorjax.colorize --workdir runs/demo my_old_photo.jpg --out colorized/

ResNet-18 U-Net at 64 px, batch 16, L1 then a short pix2pix GAN phase, on the 32 free-licensed
photos in colorjax/assets/photos. With so few photos the crops zoom into them (max_zoom 4) so
the network learns colours of textures and scenes rather than memorising 26 pictures, and an
EMA of the weights colorizes. Even so, 26 training photos are over-fitted within ~100 steps
(held-out PSNR falls from then on), so colorize loads the best checkpoint on the 6 held-out
bundled photos (`colorize_checkpoint = "best"`), evaluated every 50 steps. On 100 photos it
never saw (50 ADE20K + 50 ImageNet, 256 px) that checkpoint beats no colour by a little, with
a light tint, and later ones lose to it: docs/results.md, "The demo".
"""

import os

import colorjax
from colorjax.config import apply_variant, default_config

# Beside colorjax's code, not this file: installed, this file is colorjax/configs/demo.py.
PHOTOS = os.path.join(os.path.dirname(os.path.abspath(colorjax.__file__)), "assets", "photos")


def get_config(variant: str = ""):
  c = default_config()
  c.data.train = "folder:" + os.path.normpath(PHOTOS)
  c.data.eval_fraction = 0.15
  c.data.max_zoom = 4.0
  c.image_size = 64
  c.batch_size = 16
  c.total_steps = 300
  c.pretrain_steps = 250
  c.log_every = 25
  c.eval_every = 50
  c.checkpoint_every = 100
  c.ema_decay = 0.99
  c.colorize_checkpoint = "best"
  return apply_variant(c, variant, variants=())
