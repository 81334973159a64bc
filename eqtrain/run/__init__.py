"""The run around the training: its directory and files, checkpoints, stop signals, TensorBoard, progress.

Nothing here knows about training; the loop (``eqtrain.training.loop``) uses these parts.
"""
