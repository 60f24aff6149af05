"""Data: image decoding, datasets, the SynthFace generator and the occluder renderer."""
