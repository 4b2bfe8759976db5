"""SynthCity: a procedural city rendered as a geotagged VPR dataset with class maps.

``generate(out_dir, preset="small")`` writes the folder format of METHODS.md §2
plus one Cityscapes-trainId class map per image; see docs/SYNTHCITY.md.
"""

from vprdistill.data.filenames import parse_file_name
from vprdistill.data.synth.conditions import Condition, parse_condition
from vprdistill.data.synth.config import PRESETS, SynthConfig
from vprdistill.data.synth.traversal import ImageSpec, plan_dataset
from vprdistill.data.synth.world import build_world
from vprdistill.data.synth.writer import generate

__all__ = [
    "Condition",
    "ImageSpec",
    "PRESETS",
    "SynthConfig",
    "build_world",
    "generate",
    "parse_condition",
    "parse_file_name",
    "plan_dataset",
]
