"""Place-recognition networks: backbones, aggregators, TSCM parts, presets and checkpoints.

A model is a config dict of named parts; ``build_model`` turns a preset name or
config into a :class:`PlaceModel` (images ``(B, C, H, W)`` → unit-norm
descriptors ``(B, D)``), and ``save_model`` / ``load_model`` store it as
safetensors + JSON.
"""

from vprdistill.models.aggregators import GeM, NetVLAD, NetVLADLoupe, build_aggregator
from vprdistill.models.backbones import Backbone, PretrainedWeightsError, build_backbone
from vprdistill.models.checkpoint import (
    CheckpointError,
    load_model,
    load_state_from_safetensors,
    model_fingerprint,
    save_model,
)
from vprdistill.models.place_model import PlaceModel
from vprdistill.models.registry import PRESETS, build_model, list_presets, resolve_config
from vprdistill.models.summary import summarize

__all__ = [
    "PRESETS",
    "Backbone",
    "CheckpointError",
    "GeM",
    "NetVLAD",
    "NetVLADLoupe",
    "PlaceModel",
    "PretrainedWeightsError",
    "build_aggregator",
    "build_backbone",
    "build_model",
    "list_presets",
    "load_model",
    "load_state_from_safetensors",
    "model_fingerprint",
    "resolve_config",
    "save_model",
    "summarize",
]
