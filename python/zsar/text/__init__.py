"""Label text: word splitting, the label-word vocabulary, label checks and semantic embedders."""

from .class_vectors import ClassVectorEmbedder, UnsafePickleError, read_class_vectors
from .embedders import STOP_WORDS, SentenceEmbedder, WordVectorEmbedder, embedder_from_spec, load_name_map
from .labels import check_labels
from .vocab import SPECIAL_TOKENS, WordVocab, split_label

__all__ = ["SPECIAL_TOKENS", "STOP_WORDS", "SentenceEmbedder", "WordVectorEmbedder", "check_labels",
           "embedder_from_spec", "WordVocab", "load_name_map", "split_label"]
__all__ += ["ClassVectorEmbedder", "UnsafePickleError", "read_class_vectors"]
