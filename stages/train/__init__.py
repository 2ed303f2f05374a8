"""TSN training: model, segment sampling, augmentation, data and the loop."""
