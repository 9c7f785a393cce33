"""Uses of the clip embedding: embed a collection, search it, find near-duplicates, draw a map of
it, and score anomalies by the distance to normal clips; with baselines that need no training.

`embedders.py` turns clips into vectors (a run, a SavedModel's `embed`, a clip .tflite, or a
baseline), `store.py` keeps a collection's vectors in an embedding folder, `index.py` searches
them (FAISS), `uses.py` holds the commands and `measure.py` the retrieval figures of a run.
"""
