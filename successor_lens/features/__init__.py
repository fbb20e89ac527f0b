"""Features: mining SAE latents into mod-10 classes."""
