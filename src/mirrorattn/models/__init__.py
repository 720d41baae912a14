"""Models: the one-layer attention model, the text transformer and the vision transformer.

Import the submodules directly (``mirrorattn.models.attention``, ``.transformer``, ``.vit``).
"""
