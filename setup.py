#!/usr/bin/env python
"""Install lbgnet: library in py/, command wrappers in bin/, configs in etc/."""
import glob
import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, 'py', 'lbgnet', '_version.py')) as fx:
    version = re.search(r"__version__ = '([^']+)'", fx.read()).group(1)

setup(
    name='lbgnet',
    version=version,
    description='CNN afterburner finding Lyman Break Galaxies in DESI spectra',
    long_description=open(os.path.join(here, 'README.rst')).read(),
    license='BSD-3-Clause',
    python_requires='>=3.11',  # numpy 2.4 (requirements.txt) needs 3.11
    package_dir={'': 'py'},
    packages=find_packages('py'),
    package_data={'lbgnet': ['data/*']},
    scripts=sorted(glob.glob('bin/*')),
    data_files=[('share/lbgnet/etc', sorted(glob.glob('etc/*.yaml')))],
    zip_safe=False,
)
