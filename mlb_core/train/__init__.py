"""Training the embedded default's vision tower and projector (LLaVA-style, frozen LM).

* :mod:`.scenes`: the synthetic scene/clip generator and question maker;
* :mod:`.layouts`: every token layout the methods feed the LM (raw, pooled, body + tail);
* :mod:`.vision`: :func:`~.vision.train_vision`, the staged recipe;
* :mod:`.branches`: several questions about one clip over one pass of its visual tokens;
* :mod:`.saturate`: saturated slots (a slot unit as a clamp, built from two GELU units);
* :mod:`.card`: the model card (data, recipe, training time, held-out accuracy);
* :mod:`.sight`: held-out accuracy through the real pipeline (``mlb heldout``).
"""
