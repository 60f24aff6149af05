"""Engine: batched, cached embedding and the Protocol x FaceModel -> Result evaluation."""
