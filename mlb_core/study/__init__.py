"""The study: ``params.yaml`` handling, attention-bias maps, analysis and plots that the DVC
notebooks call (docs/architecture.md, "The study")."""
