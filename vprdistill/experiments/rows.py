"""One evaluated model as a row of a results table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ResultRow:
    """Figures of one trained model on one test split."""

    name: str  # short label, e.g. "TSCM student (cross-metric KD)"
    description: str  # one sentence on what the model is
    parameters: int
    recall: dict[str, float]  # N (as a string) -> percentage
    recall_per_condition: dict[str, dict[str, float]] = field(default_factory=dict)  # condition -> N -> %
    queries_per_condition: dict[str, int] = field(default_factory=dict)
    ms_per_image: float = float("nan")
    ms_per_query: float = float("nan")
    run_dir: str = ""
    command: str = ""  # the exact command that reproduces the row
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
