"""Datasets of geotagged images: `PlaceDataset`, `PlaceImages`, readers, image loading, transforms.

Import from the module that defines a name (``vprdistill.data.readers``,
``vprdistill.data.place_images``, ...): the package itself imports nothing, so
``import vprdistill.data`` stays cheap. The SynthCity generator is the separate
package ``vprdistill.data.synth``.
"""
