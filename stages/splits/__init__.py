"""Train/test splits, one module per source (ucf101, hmdb51, kinetics, lists, folders) and what they share
(tables: the Split, list reading and writing the split folder), plus validation carving. May import
stages.errors only (and lists, stages.frames' video extensions)."""
