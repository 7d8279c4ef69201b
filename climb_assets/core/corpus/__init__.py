"""Reading shards, document quality rules, exact duplicates, the document index."""
