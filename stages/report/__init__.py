"""One self-contained HTML page about a work folder: stages, failures, data, samples, runs, features."""
