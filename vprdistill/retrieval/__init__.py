"""Search on arrays of descriptors: exact nearest neighbours (``search``) and re-ranking (``rerank``)."""

from vprdistill.retrieval.search import SEARCH_BACKENDS, exact_search

__all__ = ["SEARCH_BACKENDS", "exact_search"]
