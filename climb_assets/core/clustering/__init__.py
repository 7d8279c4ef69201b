"""Embedding documents, K-means, pruning and merging clusters, naming them."""
