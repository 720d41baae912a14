"""Package data: the attention-map probe sentences (probe_sentences.tsv)."""
