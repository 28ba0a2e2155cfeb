"""Search: KerasTuner over adapter kinds and their hyperparameters.

Contract: `tuner` runs the trials (each one through the training package's
adapter trainer) and retrains the best as an ordinary fit run.
"""
