"""Datasets: the layout every stage writes and reads, and the ``KIND:PATH`` names of datasets."""
