"""Hydra sweeper ``bench``: Hydra's basic sweeper, less its second composition of every job."""
