"""Training the embedded default's vision tower and projector (LLaVA-style, frozen LM).

* :mod:`.scenes`: the synthetic scene/clip generator and question maker;
* :mod:`.layouts`: every token layout the methods feed the LM (raw, pooled, body + tail);
* :mod:`.vision`: :func:`~.vision.train_vision`, the three-stage recipe;
* :mod:`.heldout`: held-out accuracy by layout and sequence length.
"""
