"""Retrieval-augmented generation: documents in, passages out.

extract (bytes -> sections) -> chunking (sections -> passages) -> embeddings
-> ingest (services that write chunks) -> retrieval (dense + BM25, fused).
"""
