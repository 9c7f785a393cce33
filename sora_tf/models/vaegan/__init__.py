"""The parts of sora_vaegan (sora_tf/models/sora_vaegan.py): config, layers, networks, prior, model."""
