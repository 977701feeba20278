"""Contrastive losses and the trainer."""
