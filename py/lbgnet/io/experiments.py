"""
lbgnet.io.experiments
=====================

Files written by the experiment tools (transfer learning, hyper-parameter search, γ
study): CSV tables, configuration YAML files and merged training histories.  All are
written atomically (:func:`lbgnet.io.atomic.atomic_path`).
"""
import csv
import math
import os

import numpy as np
import yaml

from .atomic import atomic_path


def _cell(value):
    """A CSV cell: floats with 6 significant digits, None/NaN as empty."""
    if value is None:
        return ''
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return '' if not math.isfinite(value) else f'{value:.6g}'
    if isinstance(value, (list, tuple)):
        return ' '.join(_cell(v) for v in value)
    return str(value)


def write_table_csv(path, rows, columns=None):
    """Write a list of dictionaries as a CSV table.

    Parameters
    ----------
    path : str
    rows : list of dict
    columns : list of str, optional
        Column order [keys in order of first appearance].

    Returns
    -------
    str
        `path`.
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, 'w', newline='') as fx:
            writer = csv.writer(fx)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(row.get(c)) for c in columns])
    return path


def write_text(path, text):
    """Write `text` to `path` under a temporary name, then rename; return `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as fx:
            fx.write(text)
    return path


def read_table_csv(path):
    """Read a CSV table written by :func:`write_table_csv` (all values as strings)."""
    from .errors import MissingInputError
    if not os.path.exists(path):
        raise MissingInputError(path)
    with open(path, newline='') as fx:
        return list(csv.DictReader(fx))


def write_history_csv(path, history):
    """Write per-epoch training logs (``{key: [value per epoch]}``) as ``epoch,key,…`` CSV."""
    keys = list(history)
    nepochs = max((len(v) for v in history.values()), default=0)
    rows = [dict({'epoch': i}, **{k: history[k][i] if i < len(history[k]) else None for k in keys})
            for i in range(nepochs)]
    return write_table_csv(path, rows, ['epoch'] + keys)


def write_config_yaml(path, data, header=''):
    """Write a configuration mapping as YAML, with an optional comment header.

    Parameters
    ----------
    path : str
    data : dict
        Plain Python values (numpy scalars are converted).
    header : str, optional
        Text written as ``#`` comment lines before the mapping.

    Returns
    -------
    str
        `path`.
    """
    text = ''.join(f'# {line}\n' if line else '#\n' for line in header.splitlines())
    text += yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=None)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as fx:
            fx.write(text)
    return path


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
