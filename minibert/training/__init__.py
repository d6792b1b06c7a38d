"""What runs the training, beside the model that minibert/ teaches: the IMDB data and its token cache, batching,
evaluation counts, crash-safe checkpoints, run folders, torch.distributed, CUDA graphs and the run's figures.
train.py composes these; nothing in the model files imports them."""
