"""The prompted CLIP: the frozen backbone and its presets, the model variants over it, the exchanges
(memory hub, MLP, none) and their similarities, the heads, the parameter budget and the stand-in CLIP."""
