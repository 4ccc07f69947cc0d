"""Modality encoders around the LFM2 backbone, installed as ``mm.encoders`` (see docs/architecture.md)."""
