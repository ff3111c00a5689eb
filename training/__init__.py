"""Training for ProbPose, ProbPose-DH and the heatmap baseline: data with crop augmentation, losses, trainer.

Sits above the library (`probpose`) and the evaluation (`analysis`); neither imports it.
"""
