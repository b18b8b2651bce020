"""Evaluation: benchmark manifests, the synthetic probe, judges, scoring, and the resumable
runner (docs/architecture.md, "Wings")."""
