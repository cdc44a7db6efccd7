"""The statistics, on arrays only (no files, no MLflow, no embedder).

``conformal`` turns scores into p-values and levels; ``knn`` and ``combined`` (with
``descriptors``) are the nonconformity scores; ``two_sample`` holds the batch tests.
"""
