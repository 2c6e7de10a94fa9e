"""Training the JND inference model: dataset readers, patch sampling, the loop and its metrics.

The command is ``python -m jndplug.train_estimator`` (see that module for the options).
"""
