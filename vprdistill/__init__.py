"""vprdistill: visual place recognition by knowledge distillation (TSCM, StructVPR)."""

__version__ = "0.1.0"
