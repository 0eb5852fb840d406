"""The Fashion-MNIST images: the IDX files read into tensors (idx) and batched augmentation (augment)."""
