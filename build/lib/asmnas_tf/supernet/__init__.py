"""The search stage: the supernet, its model class, the DARTS architect, selection, the search runner."""
