"""Image data: folder discovery and split, the decode-once uint8 cache, batch feeding, the
bundled data sets, and the survey of a folder that ``hpo init`` writes a study file from.
The Keras batch feeder (``ArrayBatches``) is loaded on first use: importing this package
loads no Keras.
"""

from typing import Any

from hpo.data._bundled import BUNDLED, load_bundled
from hpo.data._cache import (
    CACHE_VERSION,
    DecodedImage,
    build_entry,
    cache_key,
    decode_image,
    default_cache_dir,
    find_duplicates,
    scale_to_uint8,
)
from hpo.data._dataset import Dataset, Split, load_dataset
from hpo.data._discovery import (
    IMAGE_EXTENSIONS,
    SPLITS,
    ImageIndex,
    discover,
    is_hidden,
    stratified_split,
)
from hpo.data._survey import (
    FolderSurvey,
    default_architecture,
    study_toml,
    survey_folder,
)

__all__ = [
    "Dataset",
    "Split",
    "load_dataset",
    "ArrayBatches",
    "BUNDLED",
    "load_bundled",
    "CACHE_VERSION",
    "default_cache_dir",
    "cache_key",
    "build_entry",
    "decode_image",
    "DecodedImage",
    "scale_to_uint8",
    "find_duplicates",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "ImageIndex",
    "discover",
    "stratified_split",
    "is_hidden",
    "FolderSurvey",
    "survey_folder",
    "study_toml",
    "default_architecture",
]


def __getattr__(name: str) -> Any:  # ArrayBatches is a keras.utils.PyDataset: only when asked
    if name == "ArrayBatches":
        from hpo.data._batches import ArrayBatches

        return ArrayBatches
    raise AttributeError(f"module 'hpo.data' has no attribute {name!r}")
