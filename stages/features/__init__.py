"""Snippet features of untrimmed videos, the input of temporal action localizers (BSN, BMN, G-TAD).

`snippets` (where the snippets sit and which pictures each reads), `inputs` (the loader's uint8 pictures,
many videos a batch), `models` (checkpoints and ImageNet backbones as feature extractors, the layers),
`extract` (the batched forward, video after video), `writers` (per-video HDF5 or .npy, the linked
NAME.h5), `bmn` (mmaction2's resampling to a fixed number of steps and BMN's CSVs).
Nothing here imports the CLI or the manifests.
"""

LAYERS = ("pool", "scores", "fc6", "fc7")  # here, free of torch, so the CLI can offer them
