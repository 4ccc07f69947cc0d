"""Task pipelines (installed as ``mm.pipelines``): one module per task."""
