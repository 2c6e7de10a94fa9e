"""CompressAI integration: train and fine-tune learned image codecs against JND targets.

Commands (see ``docs/compressai.md``)::

    python -m jndplug.integrations.compressai.train --model bmshj2018-hyperprior --quality 3 \\
        --checkpoint bmshj2018-hyperprior-3.pth.tar --dataset DATA --jnd-target
    python -m jndplug.integrations.compressai.evaluate KODAK --checkpoint runs/.../model.pth.tar --out results

From Python: ``train.train(train.TrainSettings(...))`` and ``evaluate.evaluate(evaluate.EvalSettings(...))``.
Importing this package imports compressai (``pip install "jndplug[compressai]"``).
"""

import warnings

with warnings.catch_warnings():
    # compressai imports torch_geometric, whose import calls torch.jit.script, deprecated in recent
    # torch: a FutureWarning about code the user does not run, printed after every command's output
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import compressai  # noqa: F401

from jndplug.integrations.compressai.codec import (MODEL_NAMES, MSE_LAMBDAS, CodecError, build_model,
                                                   default_lambda, load_codec, load_weights, qualities,
                                                   read_checkpoint, state_dict_of)

__all__ = ["MODEL_NAMES", "MSE_LAMBDAS", "CodecError", "build_model", "default_lambda", "load_codec",
           "load_weights", "qualities", "read_checkpoint", "state_dict_of"]
