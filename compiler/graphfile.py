"""The integer graph as a file: the boundary between the torch side and the numpy compiler.

``rmsmp export`` writes it from a model, ``rmsmp compile`` reads it without PyTorch (as QONNX
sits between Brevitas and FINN). The file is an ``.npz`` (``np.load`` opens it): a zip holding
``graph.json`` (magic, format version, the input's shape and quantisation, the graph's ``meta``,
and each node's type and scalar fields) and every node array as ``{node}.{field}.npy``, stored
with its dtype, so a loaded graph lowers to the same Program as the one saved. numpy only.
"""

from __future__ import annotations

import dataclasses
import io
import json
import typing
import zipfile
from pathlib import Path

import numpy as np

from .ir import GraphError, IntGraph, Node

MAGIC = "rmsmp-graph"
FORMAT_VERSION = 1
HEADER = "graph.json"
NODE_TYPES: dict[str, type] = {cls.__name__: cls for cls in typing.get_args(Node)}
"""Every node class of ``ir.Node``, by the name the file gives it."""
_GRAPH_SCALARS = ("input_shape", "input_scale", "input_lo", "input_hi")
_REWRITE = "write it again with `rmsmp export`"


class GraphFileError(ValueError):
    """A graph file that cannot be read or a graph that cannot be written; names the fix."""


def _plain(v: object, where: str) -> object:
    """``v`` as JSON data (numpy scalars to Python, tuples to lists); GraphFileError otherwise."""
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        return [_plain(i, where) for i in v]
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {k: _plain(i, where) for k, i in v.items()}
    raise GraphFileError(f"{where}: a {type(v).__name__} has no file form; give the node JSON data")


def _json_meta(meta: dict) -> dict:
    """The entries of ``meta`` that JSON can hold (meta is information; the rest is dropped)."""
    out = {}
    for k, v in meta.items():
        try:
            out[k] = _plain(v, "meta")
        except GraphFileError:
            continue
    return out


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def save_graph(graph: IntGraph, path: str | Path) -> None:
    """Write ``graph`` to ``path`` (see the module doc)."""
    nodes, arrays = [], {}
    for i, node in enumerate(graph.layers):
        entry: dict = {"type": type(node).__name__, "fields": {}, "arrays": {}}
        for f in dataclasses.fields(node):
            v = getattr(node, f.name)
            if isinstance(v, np.ndarray):
                key = f"{i}.{f.name}.npy"
                arrays[key] = v
                entry["arrays"][f.name] = key
            else:
                entry["fields"][f.name] = _plain(v, f"node {i} ({node.name}) field {f.name}")
        nodes.append(entry)
    header = {
        "magic": MAGIC,
        "version": FORMAT_VERSION,
        **{k: _plain(getattr(graph, k), k) for k in _GRAPH_SCALARS},
        "meta": _json_meta(graph.meta),
        "nodes": nodes,
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(HEADER, json.dumps(header, indent=1))
        for key, a in arrays.items():
            z.writestr(key, _npy(a))


def is_graph_file(path: str | Path) -> bool:
    """True for a file ``save_graph`` wrote (a zip with ``graph.json``): what ``rmsmp compile``
    tells apart from a torch checkpoint, which is a zip too."""
    try:
        with zipfile.ZipFile(path) as z:
            return HEADER in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _tuples(cls: type, fields: dict) -> dict:
    """``fields`` with the lists that ``cls`` declares as tuples made tuples again."""
    out = dict(fields)
    for f in dataclasses.fields(cls):
        if isinstance(out.get(f.name), list) and str(f.type).startswith("tuple"):
            out[f.name] = tuple(out[f.name])
    return out


def load_graph(path: str | Path) -> IntGraph:
    """Read a graph file written by ``save_graph``; GraphFileError names the file and the fix."""
    try:
        with zipfile.ZipFile(path) as z:
            try:
                header = json.loads(z.read(HEADER))
            except KeyError:
                raise GraphFileError(
                    f"{path}: no {HEADER}, not an rmsmp graph file; {_REWRITE}"
                ) from None
            if not isinstance(header, dict) or header.get("magic") != MAGIC:
                raise GraphFileError(f"{path}: not an rmsmp graph file; {_REWRITE}")
            if header.get("version") != FORMAT_VERSION:
                raise GraphFileError(
                    f"{path}: graph format version {header.get('version')!r} is not supported "
                    f"(this rmsmp reads version {FORMAT_VERSION}); {_REWRITE} with this rmsmp"
                )
            nodes = [_node(z, path, i, n) for i, n in enumerate(header["nodes"])]
            return IntGraph(
                nodes,
                tuple(header["input_shape"]),
                header["input_scale"],
                header["input_lo"],
                header["input_hi"],
                meta=dict(header["meta"]),
            )
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GraphFileError(f"{path}: not a readable graph file ({e}); {_REWRITE}") from None
    except (KeyError, TypeError) as e:
        raise GraphFileError(f"{path}: graph.json lacks or garbles {e}; {_REWRITE}") from None
    except GraphError as e:
        raise GraphFileError(f"{path}: the graph is inconsistent ({e}); {_REWRITE}") from None


def _node(z: zipfile.ZipFile, path: str | Path, i: int, entry: dict) -> Node:
    """Node ``i`` from its ``graph.json`` entry and its arrays."""
    cls = NODE_TYPES.get(entry["type"])
    if cls is None:
        raise GraphFileError(
            f"{path}: node {i} has type {entry['type']!r}, which this rmsmp does not know "
            f"(it knows {', '.join(NODE_TYPES)}); use the rmsmp that wrote it"
        )
    kwargs = _tuples(cls, entry["fields"])
    for name, key in entry["arrays"].items():
        try:
            kwargs[name] = np.lib.format.read_array(io.BytesIO(z.read(key)), allow_pickle=False)
        except (KeyError, ValueError) as e:
            raise GraphFileError(
                f"{path}: node {i} array {key} is missing or broken ({e})"
            ) from None
    return cls(**kwargs)
