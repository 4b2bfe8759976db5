"""Evaluation: descriptor extraction (``extract``), Recall@N (``recall``), the report (``evaluate``), pictures."""
