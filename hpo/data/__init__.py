"""Image data: folder discovery and split, the decode-once cache, batch feeding."""

from hpo.data.dataset import Dataset, Split, load_dataset

__all__ = ["Dataset", "Split", "load_dataset"]
