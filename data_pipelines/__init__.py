"""Records to batches: tasks, coarseners, tokenizer, TFDS builder, pipeline."""
