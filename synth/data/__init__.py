"""Training corpora: format, builders (soundfont, procedural, folder), splits, descriptors, dataset."""
