"""Deployment: the map index of an area, localisation, calibration, ONNX export and latency benchmarks.

- ``index.MapIndex``: descriptors + positions + paths + model identity, in a folder
  replaced atomically; ``build.build_map_index`` describes images into one.
- ``localizer.Localizer``: photos → top-K ``Match``es with positions and confidence.
- ``calibration``: the out-of-map score threshold, calibrated on a validation split.
- ``export.export_onnx``: ONNX graph checked against PyTorch with ONNX Runtime.
- ``bench`` / ``matching_bench``: ms per image, ms per query, memory and machine limits.
"""
