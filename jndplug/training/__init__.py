"""Training the JND inference model: dataset readers, patch sampling, the loop and its metrics.

The command is ``jndplug train`` (see jndplug.cli.train for the options).
"""
