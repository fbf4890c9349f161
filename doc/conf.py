"""Sphinx configuration for lbgnet."""
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', 'py')))
from lbgnet._version import __version__  # noqa: E402

project = 'lbgnet'
author = 'lbgnet developers'
copyright = '2026, lbgnet developers'
version = release = __version__
extensions = ['sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'sphinx.ext.mathjax',
              'sphinx.ext.viewcode']
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_mock_imports = []  # keras (lbgnet.model, losses, train) needs the real tensorflow
exclude_patterns = ['_build']
html_theme = 'alabaster'
nitpicky = False
suppress_warnings = ['ref.python']
