"""The service tests reuse the deployment fixtures (tiny dataset, model and index)."""

from tests.deploy.conftest import tiny_dataset, tiny_index, tiny_model_stem  # noqa: F401
