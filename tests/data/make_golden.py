#!/usr/bin/env python
"""Regenerate tests/data/golden_default_model.npz after the shipped model changes.

The fixture holds 8 mock spectra (gridded input), the SHA-256 of the shipped weights and
the network outputs and post-processed values they gave.  tests/test_model.py checks that
the shipped model still reproduces them.  Run from the repository root::

    PYTHONPATH=py python tests/data/make_golden.py
"""
import os

import numpy as np
from desiutil.log import get_logger


def main():
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from lbgnet.io.modelfile import default_model_path, load_model, read_model_description
    from lbgnet.model import predict_boxes
    from lbgnet.postprocess import postprocess
    from lbgnet.sim.generator import MockBatches
    from lbgnet.sim.mock import load_mock_setup
    path = default_model_path()
    model, config, _ = load_model(path)
    sha = read_model_description(path)[0]['weights_sha256']
    setup = load_mock_setup('lbgnet-mock.yaml')
    batches = MockBatches(setup, batch_size=8, batches_per_epoch=1, seed=424242,
                          rmag_range=(22.0, 23.0), return_truth=True)
    X, truth = batches[0]
    conf, offset = predict_boxes(model, X)
    res = postprocess(conf, offset, config)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden_default_model.npz')
    np.savez_compressed(out, X=X, conf=conf, offset=offset, weights_sha256=sha,
                        C_LBG=res['C_LBG'], Z_LBG=res['Z_LBG'], IS_LBG=res['IS_LBG'],
                        CLASS=np.asarray(truth['CLASS']).astype('U8'),
                        Z_TRUE=np.asarray(truth['Z_TRUE']))
    get_logger().info("wrote %s", out)


if __name__ == '__main__':
    main()
