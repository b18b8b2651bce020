"""Efficiency benchmark: FLOPs model, measurement, tracing of the LLM passes each method makes,
and the ``mlb bench`` command (docs/architecture.md, "Wings")."""
