"""The Gradio demo apps, installed as ``mm.apps`` (the folders and data flow: docs/architecture.md; usage: docs/apps.md)."""
