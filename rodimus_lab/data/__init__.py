"""Data: MQAR (synthetic recall) and WikiText (real text); ``DataConfig`` ties either to a run."""

from .mqar import MQAR_PRESETS, MQARPreset, MQARSplit, generate_mqar, make_mqar_splits, mqar_accuracy, mqar_preset
from .recipe import DataConfig, build_data, data_vocab_size

__all__ = ["generate_mqar", "mqar_accuracy", "mqar_preset", "make_mqar_splits", "MQARPreset", "MQARSplit",
           "MQAR_PRESETS", "DataConfig", "build_data", "data_vocab_size"]
