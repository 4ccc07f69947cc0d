"""mm.apps: see DESIGN (installed as ``mm.apps``)."""
