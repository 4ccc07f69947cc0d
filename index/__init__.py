"""mm.index: see DESIGN (installed as ``mm.index``)."""
