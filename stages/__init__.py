"""The work of each stage, as plain functions that know nothing of the CLI, manifests or parallelism."""
