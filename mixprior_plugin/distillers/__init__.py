"""Distillers: the distillation machinery a KD model owns (recorders, connectors, feature normalisation, loss terms).

* :class:`KDDistiller` (``kd_distiller.py``): output KD and the feature-KD baselines.
* :class:`MiPKDDistiller` (``mipkd_distiller.py``): KD's terms plus MiPKD's prior mixers and block path.

A model names its distiller in ``distiller_class``; the model keeps BasicSR's training lifecycle.
"""
from .kd_distiller import KDDistiller
from .mipkd_distiller import MiPKDDistiller

__all__ = ['KDDistiller', 'MiPKDDistiller']
