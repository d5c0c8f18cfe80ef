"""PSSR (Fang et al. 2021): point-scanning super-resolution by 4× super-sampling, single- and multi-frame.

`crappify` degrades HR images into LR training inputs, `movies` simulates time-lapses of moving, dividing and
fusing mitochondria, `network` is the super-sampling U-Net (sub-pixel convolution, ICNR, blur), `train` / `evaluate`
/ `predict` / `package` the pipeline steps; the CLI is `cristae-zoo pssr …`.
"""
