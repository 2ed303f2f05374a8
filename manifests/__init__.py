"""The record of what was done: rows, fingerprints, params hashes, the needs-work rule, atomic I/O, the lock."""
