"""CARE for luminescence microscopy (after Boothe et al.): short → long exposure, binned upsampling, noise2noise.

- `simulate`: 3D luminescence acquisitions of mitochondria (Poisson photons, EM-CCD gain, read noise) with the
  noise-free scene as ground truth; short, long and repeated acquisitions of the same scene;
- `modes`: the three training modes as configurations of one data flow (which folder is input, which target,
  optional software binning of the input), plus the 8-fold rotation/mirror augmentation;
- `network`, `losses`: a 2D/3D U-Net with CARE's residual mean and a softplus Laplace scale, trained with the
  Laplace negative log-likelihood;
- `train`, `evaluate`, `predict`, `package`: training, the paper's readouts, tiled prediction, bioimage.io package.
"""

#: the training modes, see `modes.ModeConfig.for_mode`
MODES = ("pairs", "binning", "noise2noise")
