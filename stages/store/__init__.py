"""The frame store: its reader (frame folders, LMDB or HDF5 behind one interface), the two writers and the
pack driver. May import stages.errors and stages.frames (frame names) only."""
