"""Package data: the attention-map probe sentences (probe_sentences.tsv), the claims of the report
(claims.toml) and the embedded sentence polarity data set (sentence_polarity.zip; DATA_LICENSES.md)."""
