"""The dataset API of the seed guide, and datakiln's deterministic ``Loader``.

Everything the seed's data-loading guide imports from ``artifex`` is importable from here (see
``docs/seed-api.md`` for the mapping and for each fix to the guide's bugs):

* the contract: :class:`BaseDataset` (``__len__`` + ``read_batch(indices)`` gives indexing,
  iteration and ``get_batch``), :class:`Rngs`;
* configs: :class:`ImageModalityConfig`, :class:`ImageRepresentation`,
  :class:`AudioModalityConfig`, :class:`ModalityConfiguration`, :class:`TextParams`,
  :class:`BaseModalityConfig`; :class:`ImageModality`;
* synthetic data: image, text, audio and multi-modal datasets and their factories;
* transforms, validation and augmentation;
* loaders: the seed's loaders, :func:`split_dataset`, and :class:`Loader`.
"""

from datakiln.datasets import rngs  # noqa: F401  (``rngs as nnx`` stands in for flax's nnx)
from datakiln.datasets.audio import SyntheticAudioDataset, create_audio_dataset
from datakiln.datasets.augment import (
    augment_audio,
    augment_audio_array,
    augment_audio_batch,
    augment_batch,
    augment_batch_jit,
    augment_image,
    augment_images,
    augment_text_array,
    augment_text_batch,
    augment_text_tokens,
)
from datakiln.datasets.base import BaseDataset, has_random_access, read_indices
from datakiln.datasets.batching import collate, pad_batch, take_rows, unbatch
from datakiln.datasets.configs import (
    AudioModalityConfig,
    BaseModalityConfig,
    ImageModalityConfig,
    ImageRepresentation,
    ModalityConfiguration,
    TextParams,
)
from datakiln.datasets.image import (
    ImageModality,
    MNISTLikeDataset,
    SyntheticImageDataset,
    create_image_dataset,
)
from datakiln.datasets.loader import BlockShuffle, Loader, epoch_order, shard_slices
from datakiln.datasets.loaders import (
    PrefetchDataLoader,
    create_multi_epoch_data_loader,
    create_multi_modal_loader,
    create_simple_data_loader,
    create_training_pipeline,
)
from datakiln.datasets.mixture import Mixture, mix
from datakiln.datasets.multimodal import (
    MultiModalDataset,
    MultiModalPairedDataset,
    create_synthetic_multi_modal_dataset,
)
from datakiln.datasets.rngs import Rngs
from datakiln.datasets.splits import SubsetDataset, parse_split, split_dataset
from datakiln.datasets.text import SimpleTextDataset, SyntheticTextDataset, create_text_dataset
from datakiln.datasets.tokenize import word_hash, word_hash_tokenize
from datakiln.datasets.transforms import TransformDataset
from datakiln.datasets.validation import ValidatedDataset, validate_batch, validate_sample
from datakiln.errors import RandomAccessError, SampleValidationError

__all__ = [
    "AudioModalityConfig",
    "BaseDataset",
    "BaseModalityConfig",
    "BlockShuffle",
    "ImageModality",
    "ImageModalityConfig",
    "ImageRepresentation",
    "Loader",
    "MNISTLikeDataset",
    "Mixture",
    "ModalityConfiguration",
    "MultiModalDataset",
    "MultiModalPairedDataset",
    "PrefetchDataLoader",
    "RandomAccessError",
    "Rngs",
    "SampleValidationError",
    "SimpleTextDataset",
    "SubsetDataset",
    "SyntheticAudioDataset",
    "SyntheticImageDataset",
    "SyntheticTextDataset",
    "TextParams",
    "TransformDataset",
    "ValidatedDataset",
    "augment_audio",
    "augment_audio_array",
    "augment_audio_batch",
    "augment_batch",
    "augment_batch_jit",
    "augment_image",
    "augment_images",
    "augment_text_array",
    "augment_text_batch",
    "augment_text_tokens",
    "collate",
    "create_audio_dataset",
    "create_image_dataset",
    "create_multi_epoch_data_loader",
    "create_multi_modal_loader",
    "create_simple_data_loader",
    "create_synthetic_multi_modal_dataset",
    "create_text_dataset",
    "create_training_pipeline",
    "epoch_order",
    "has_random_access",
    "mix",
    "pad_batch",
    "parse_split",
    "read_indices",
    "shard_slices",
    "split_dataset",
    "take_rows",
    "unbatch",
    "validate_batch",
    "validate_sample",
    "word_hash",
    "word_hash_tokenize",
]
