"""Class scores: score files, the test protocol and evaluation, fusion, the report and predict. May import
stages.errors, stages.progress, stages.store and stages.train (models and data for scoring)."""
