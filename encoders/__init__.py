"""mm.encoders: see DESIGN (installed as ``mm.encoders``)."""
