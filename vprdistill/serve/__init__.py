"""HTTP service for localisation (``create_app`` in ``serve.app``; ``vprdistill serve``)."""
