"""sae_train: activation sources, SAE training, checkpoints, pretrained dictionaries."""
