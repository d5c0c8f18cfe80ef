"""Label-free prediction of mitochondria and DNA fluorescence from transmitted light (after Hsu et al.).

- `simulate`: paired transmitted-light / fluorescence images of simulated cells;
- `network`: the U-Net of the paper (stride-2 convolutions down, stride-2 transposed convolutions up, batch norm);
- `train`, `evaluate`: training on TL/fluorescence pairs, Pearson r and SSIM per structure;
- `torch_twin`, `package`: a bioimage.io package with TF SavedModel, ONNX and TorchScript weights.
"""

#: the structures the simulator writes, in channel order
STRUCTURES = ("mito", "dna")
