"""Index directory format, FAISS backend and the index builder."""
