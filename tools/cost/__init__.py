"""Offline monthly cost estimate of synthesized cloud assemblies (``make cost``); see README.md."""
