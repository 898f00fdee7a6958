"""Compression for Keras 3 models: pruning (unstructured, N:M, channels), distillation, low-rank, clustering, QAT.

Light on import (no TensorFlow until a function runs), like every stage package.
"""

from __future__ import annotations

from .api import PruneReport, PruneStep, compress, prune_model, save_keras_atomically
from .cluster import ClusterReport, ClusterSpec, cluster_model
from .distill import DistillReport, DistillSpec, distill
from .lowrank import LowRankReport, LowRankSpec, factorize
from .qat import QatReport, QatSpec, prepare_qat, quantization_aware_training
from .spec import PruneSpec
from .student import scale_width

__all__ = ["PruneReport", "PruneSpec", "PruneStep", "compress", "prune_model", "save_keras_atomically"]
__all__ += ["ClusterReport", "ClusterSpec", "DistillReport", "DistillSpec", "LowRankReport", "LowRankSpec"]
__all__ += ["cluster_model", "distill", "factorize", "scale_width"]
__all__ += ["QatReport", "QatSpec", "prepare_qat", "quantization_aware_training"]
