"""Keras layers of the DMI user tower (one concept per module)."""
