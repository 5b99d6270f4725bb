"""Reading and validating multimodal single-cell count data for scMM.

Every reader returns raw counts: each modality's ``X`` is a
:class:`scipy.sparse.csr_matrix` of ``float32`` holding non-negative integers,
the cells (``obs_names``) are identical and in the same order in every
modality, and feature names are unique within a modality.

Supported inputs
----------------
* ``.h5mu`` (MuData);
* a Cell Ranger ``filtered_feature_bc_matrix.h5`` or the matching ``.mtx``
  folder (``matrix.mtx[.gz]``, ``features.tsv[.gz]``/``genes.tsv[.gz]``,
  ``barcodes.tsv[.gz]``), split by feature type into ``rna`` (Gene
  Expression), ``prot`` (Antibody Capture), ``atac`` (Peaks) and other types
  under their lowercase name;
* two or more ``.h5ad`` files (one modality each), paired by barcode;
* a single ``.h5ad`` with the proteins in ``obsm`` (older CITE-seq layout);
* GEO-style Matrix Market files, ``*.mtx`` or ``*.mtx.gz`` (one modality
  each; given one by one, or a folder holding them): the name files are given
  (``read(..., features=, barcodes=)``, :func:`read_mtx`) or found beside the
  matrix by this rule: a file ``<prefix><word>.tsv|.csv|.txt[.gz]`` (a
  separator ``.``, ``_`` or ``-`` may stand before the word) where the word is
  ``features``, ``genes``, ``peaks``... for the features and ``barcodes`` or
  ``cells`` for the cells, and ``<prefix>`` is the start of the matrix name up
  to a separator, or empty (a file without prefix, e.g. ``barcodes.tsv``, is
  shared by all matrices of the folder); the longest prefix wins.  E.g.
  ``rna_counts.features_x_cells.mtx.gz`` takes ``rna_features.tsv`` and
  ``barcodes.tsv``.  Features x cells or cells x features is found from the
  sizes of the name files (a first line one too many is a header);
* CSV/TSV count tables, gzipped or not (``.csv``, ``.tsv``, ``.txt``,
  ``.tab`` [``.gz``]), one per modality: row names in the first column, column
  names in the first line (with or without a corner cell).  Which side is the
  cells: ``orientation=`` if given; else the side whose names look like cell
  barcodes (runs of 8+ A/C/G/T/N) when the other does not; else the side that
  shares names with the cells of the other inputs; else the file name
  (``genes_x_cells``, ``cells_x_features``...); else a ReadError asks for
  ``orientation=``.

The orientation of matrices and tables is stated in a :class:`ReadNote`
warning and kept in ``mod[m].uns['scmm_source']``.

Modality names and kinds
------------------------
A modality's name comes from the file (``.h5mu`` keys, 10x feature types),
from ``modality_names=``, or is guessed from the file stem and then the
features (``rna``, ``prot``, ``atac``; else the stem).  Any name that is not a
valid modality name (``^[A-Za-z_][A-Za-z0-9_]{0,63}$``, the model's rule) is
replaced, with a UserWarning saying which became which, by the short name of
its kind (``rna``, ``prot``, ``atac``) when the kind is given or recognised,
else by the name with every other character turned into ``_`` (``m_`` before a
leading digit); ``_2``, ``_3``... make it unique.  E.g.
``openproblems_bmmc_cite_starter.output_mod2`` (ADT features) -> ``prot``,
``prot.v2`` beside ``prot`` -> ``prot_2``.  The original is kept in
``mod[m].uns['scmm_original_name']`` and ``uns['scmm_modalities']``.

The kind (``rna``, ``protein``, ``atac``) is the one given (``kinds=``), else
recognised from the name (words such as rna/gex/genes, prot/adt/antibody,
atac/peaks), else from the features (feature types such as Gene Expression /
GEX, Antibody Capture / ADT, Peaks; peak coordinates ``chr1:100-200``; a panel
of at most 300 antibody-like names such as CD3, HLA-DR), else ``protein`` as
before.  It is stored in ``mod[m].uns['scmm_kind']``, which
:func:`scmm.preprocess.modality_kind` honours when given the AnnData.

Nothing here ever writes a file.  Every problem with the input is reported as
a :class:`ReadError` whose message names the file and the problem: also bad
CSR/CSC structure, complex, boolean or non-numeric values (with the dtype of
every modality), and data that needs more memory than is available (checked
before allocating, with the figure).
"""

from __future__ import annotations

import warnings

from pathlib import Path

import anndata
import mudata
import numpy as np
import scipy.sparse as sp

from .checks import _build, _check_barcodes, _counts_matrix, _new_anndata, _unique_var
from .errors import ReadError
from .formats import (
    FEATURE_TYPE_MODALITY,  # noqa: F401 - re-exported for callers of scmm.io
    MODALITY_NAME,  # noqa: F401 - re-exported
    PROTEIN_OBSM_KEYS,
    _Entry,
    _apply_names,
    _as_path,
    _check_h5_input,
    _detect_format,
    _file_stem,
    _finalise_names,
    _geo_matrices,
    _global_parts,
    _guarded,
    _guess_name,
    _orient_tables,
    _protein_key,
    _read_10x,
    _read_table_raw,
    _split_obsm_proteins,
    _table_to_anndata,
    read_mtx_file,
)

__all__ = [
    "ReadError", "ReadNote", "read", "read_mtx", "read_table", "read_query", "validate", "summarize",
    "parse_modality_specs", "read_modalities",
]


class ReadNote(UserWarning):
    """How an input was understood (e.g. the orientation of a matrix); informational."""


def _note(text: str) -> None:
    warnings.warn(text, ReadNote, stacklevel=3)


def _seq(value, n, what, source):
    """``value`` as a list of ``n`` (a single value is repeated)."""
    if value is None or isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        return [value] * n
    if len(value) != n:
        raise ReadError(f"{source}: {what} has {len(value)} entries but there are {n} matrix files")
    return list(value)


def read(
    path,
    *more_paths,
    modality_names=None,
    kinds=None,
    counts_layer: str = "counts",
    protein_obsm_key: str | None = None,
    features=None,
    barcodes=None,
    orientation=None,
) -> mudata.MuData:
    """Read raw multimodal counts into one validated :class:`mudata.MuData`.

    Parameters
    ----------
    path, *more_paths
        One ``.h5mu`` file, one Cell Ranger ``.h5`` file or ``.mtx`` folder,
        a folder of GEO-style Matrix Market files, one ``.h5ad`` with proteins
        in ``obsm``, or two or more files (``.h5ad``, ``.mtx[.gz]``,
        ``.csv/.tsv[.gz]`` count tables; one modality each) that are paired by
        barcode.  The format is recognised from the content and the name.
    modality_names
        Names for the modalities, either a sequence with one name per
        modality (in file order; for several files one per file) or a mapping
        ``{guessed_or_original_name: new_name}``.  By default names are taken
        from the file (``.h5mu``), from the feature types (10x) or guessed from
        the file stem / feature names (``rna``, ``prot``, ``atac``; else the
        stem).  Any name is made a valid, unique modality name (see the module
        docstring); the original is kept in ``mod[m].uns['scmm_original_name']``.
    kinds
        The kind of each modality, ``'rna'``, ``'protein'`` or ``'atac'``: a
        mapping ``{name: kind}`` (original, given or final name) or a sequence
        with one kind (or None) per modality.  Default: recognised from the
        name, then the features.  Stored in ``mod[m].uns['scmm_kind']``.
    counts_layer
        Layer holding raw counts; used in preference to ``X`` when present.
    protein_obsm_key
        ``obsm`` key with the protein counts of a single ``.h5ad`` (default:
        the first of :data:`PROTEIN_OBSM_KEYS` that exists).
    features, barcodes
        Name files of Matrix Market inputs: one path (shared by every matrix)
        or a list with one per ``.mtx`` input, in order; by default found by
        the rule of the module docstring.
    orientation
        ``'features_x_cells'`` or ``'cells_x_features'`` for the matrix and
        table inputs (or a mapping ``{path or file name: orientation}``);
        by default detected (module docstring) and stated in a
        :class:`ReadNote` and ``mod[m].uns['scmm_source']``.

    Returns
    -------
    MuData
        Every modality's ``X`` is a ``csr_matrix`` of float32 raw counts; the
        cells are the barcodes shared by all modalities (order of the first),
        without cells that have zero counts in any modality; features with zero
        counts in all cells are dropped.

    Raises
    ------
    ReadError
        Missing, unreadable, corrupt or unknown file, fewer than two
        modalities, no shared barcodes, duplicate barcodes, values that are not
        raw counts (negative, fractional, NaN, complex, boolean, non-numeric),
        bad sparse structure, or data larger than the available memory.
    """
    paths = [_as_path(p) for p in (path, *more_paths)]
    source = ", ".join(str(p) for p in paths)
    try:
        return _read(paths, source, modality_names, kinds, counts_layer, protein_obsm_key,
                     features, barcodes, orientation)
    except MemoryError as exc:
        raise ReadError(
            f"{source}: ran out of memory while reading; the data is larger than the memory "
            "available on this machine"
        ) from exc


def _read(paths, source, modality_names, kinds, counts_layer, protein_obsm_key, features, barcodes,
          orientation):
    fmts = [_detect_format(p) for p in paths]
    n_mtx = sum(f == "mtx" for f in fmts)
    feat_list = _seq(features, n_mtx, "features", source)
    bc_list = _seq(barcodes, n_mtx, "barcodes", source)
    i_mtx = 0

    entries: list[_Entry] = []
    tables: list[tuple[int, Path, object, list, list]] = []  # entry index, path, raw
    global_obs = None
    global_obsm = None
    uns: dict = {}
    single = len(paths) == 1
    for p, kind in zip(paths, fmts):
        if kind in ("h5mu", "h5ad", "10x_h5"):
            _check_h5_input(p)
        if kind == "h5mu":
            md = _guarded(p, "h5mu", lambda p=p: mudata.read_h5mu(p))
            if not md.mod:
                raise ReadError(f"{p}: the .h5mu file holds no modalities")
            for name, ad in md.mod.items():
                entries.append(_Entry(name, ad, p, where=None))
            if single:
                global_obs, global_obsm, uns = _global_parts(md)
        elif kind in ("10x_h5", "10x_mtx"):
            for name, ad in _read_10x(p, kind).items():
                entries.append(_Entry(name, ad, p, where=None))
        elif kind in ("mtx", "geo_mtx"):
            if kind == "mtx":
                mats = [(p, feat_list[i_mtx], bc_list[i_mtx])]
                i_mtx += 1
            else:
                mats = [(m, None, None) for m in _geo_matrices(p)]
            for m, f, b in mats:
                o = orientation.get(str(m), orientation.get(m.name)) if isinstance(orientation, dict) else orientation
                for name, ad, orig in _mtx_modalities(m, f, b, o):
                    _note(ad.uns["scmm_source"])
                    entries.append(_Entry(name, ad, m, where=None, guessed=True, original=orig))
        elif kind == "table":
            M, rows, cols, _sep = _read_table_raw(p)
            tables.append((len(entries), p, M, rows, cols))
            entries.append(_Entry(_file_stem(p), None, p, where=None, guessed=True))
        else:  # h5ad
            ad = _guarded(p, "h5ad", lambda p=p: anndata.read_h5ad(p))
            if single:
                key = _protein_key(ad, protein_obsm_key, p)
            else:  # with several files, split only a file that has the named key
                key = protein_obsm_key if protein_obsm_key and protein_obsm_key in ad.obsm else None
            if key is not None:
                rna, prot = _split_obsm_proteins(ad, key, p)
                entries.append(_Entry("rna", rna, p, where=None))
                entries.append(_Entry("prot", prot, p, where=f"obsm['{key}']"))
                if single:
                    global_obs = ad.obs.copy()
                    uns = dict(ad.uns)
                    uns.pop("protein_names", None)
            else:
                entries.append(_Entry(_guess_name(p, ad), ad, p, where=None, guessed=True,
                                      original=_file_stem(p)))

    if tables:
        known = set()
        for e in entries:
            if e.adata is not None:
                known.update(str(x) for x in e.adata.obs_names)
        raw = [(p, M, rows, cols) for _i, p, M, rows, cols in tables]
        decided = _orient_tables(raw, known, orientation)
        for (i, p, M, rows, cols), (o, why) in zip(tables, decided):
            ad = _table_to_anndata(p, M, rows, cols, o, why)
            _note(ad.uns["scmm_source"])
            entries[i].adata = ad
            entries[i].name = _guess_name(p, ad)
            entries[i].original = _file_stem(p)

    _apply_names(entries, modality_names, source)

    if len(entries) < 2:
        e = entries[0]
        hint = ""
        if fmts[0] == "h5ad":
            keys = list(e.adata.obsm.keys())
            hint = (
                f"; no proteins found in obsm (looked for {list(PROTEIN_OBSM_KEYS)}, "
                f"obsm has {keys}); pass a second file or protein_obsm_key="
            )
        raise ReadError(
            f"{source}: found only one modality ('{e.name}'); scMM needs at least 2 "
            f"modalities measured in the same cells{hint}"
        )

    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ReadError(
            f"{source}: modality name(s) {dup} occur more than once "
            f"(modalities {names}); pass modality_names= to name them"
        )
    _finalise_names(entries, kinds, source)

    if len(paths) > 1:
        labels = {
            e.name: (e.path.name if sum(x.path == e.path for x in entries) == 1 else f"{e.path.name}:{e.name}")
            for e in entries
        }
        what = "all files"
    else:
        labels = {e.name: f"modality '{e.name}'" for e in entries}
        what = "all modalities"

    md = _build(
        entries,
        source=source,
        counts_layer=counts_layer,
        labels=labels,
        shared_label=what,
        global_obs=global_obs,
        global_obsm=global_obsm,
        uns=uns,
        pull_obs=len(paths) > 1 or global_obs is None,
    )
    _record_names(md, entries)
    return md


def _record_names(md: mudata.MuData, entries) -> None:
    """Keep each modality's original name, kind and (where stated) how it was read."""
    for e in entries:
        u = md.mod[e.name].uns
        u["scmm_original_name"] = e.original
        u["scmm_kind"] = e.kind
        u["scmm_kind_from"] = e.kind_from
    md.uns["scmm_modalities"] = {
        e.name: {"original_name": e.original, "kind": e.kind, "kind_from": e.kind_from,
                 "file": str(e.path) if e.path is not None else ""}
        for e in entries
    }


def _mtx_modalities(m: Path, features, barcodes, orientation):
    """[(name, AnnData, original name)] of one Matrix Market file; a file whose features
    carry several feature types (10x v3 columns) is split like a Cell Ranger matrix."""
    ad = read_mtx_file(m, features, barcodes, orientation)
    stem = _file_stem(m)
    if "feature_types" in ad.var.columns and ad.var["feature_types"].nunique() > 1:
        out = []
        ft = ad.var["feature_types"].astype(str).to_numpy()
        for t in dict.fromkeys(ft):
            name = FEATURE_TYPE_MODALITY.get(t, t)
            part = ad[:, ft == t].copy()
            part.uns["scmm_source"] = ad.uns["scmm_source"]
            out.append((name, part, t))
        return out
    return [(_guess_name(m, ad), ad, stem)]


def read_mtx(matrix, features=None, barcodes=None, orientation=None) -> anndata.AnnData:
    """Read one Matrix Market file (``.mtx`` or ``.mtx.gz``) as one modality's raw AnnData.

    ``features`` / ``barcodes``: the name files (first column: ids, second:
    names, third: feature types; gzipped or not); by default found beside the
    matrix by the rule of the module docstring.  The orientation (features x
    cells or cells x features) is found from the sizes of the name files (a
    first line one too many is taken as a header) unless ``orientation`` is
    given, and stated in ``uns['scmm_source']``.  The values are checked by
    :func:`read` / :func:`validate`; combine modalities with
    ``validate(MuData({...}))`` or pass the files to :func:`read`.

    Raises :class:`ReadError` naming the file and the problem.
    """
    from pathlib import Path as _P

    try:
        return read_mtx_file(_P(matrix), features, barcodes, orientation)
    except MemoryError as exc:
        raise ReadError(f"{matrix}: ran out of memory while reading") from exc


def read_table(path, orientation=None) -> anndata.AnnData:
    """Read one CSV/TSV count table (gzipped or not) as one modality's raw AnnData.

    The first column holds row names, the first line column names (with or
    without a corner cell).  Which side is the cells is decided as described in
    the module docstring (here without other inputs: barcode-like names or the
    file name) unless ``orientation`` is given, and stated in
    ``uns['scmm_source']``.  Raises :class:`ReadError`.
    """
    p = _as_path(path)
    if not p.is_file():
        raise ReadError(f"{p}: file not found")
    M, rows, cols, _sep = _read_table_raw(p)
    ((o, why),) = _orient_tables([(p, M, rows, cols)], set(), orientation)
    return _table_to_anndata(p, M, rows, cols, o, why)


def parse_modality_specs(specs) -> tuple[list[str], list[str], dict, list, list]:
    """Parse CLI ``--modality`` values ``NAME[:KIND]=FILE[,FEATURES,BARCODES]``.

    Returns ``(paths, names, kinds, features, barcodes)`` for :func:`read`;
    ``FEATURES``/``BARCODES`` name the files of a Matrix Market ``FILE``.
    Raises ReadError for a malformed value.
    """
    paths, names, kinds, feats, bcs = [], [], {}, [], []
    for spec in specs:
        left, sep, right = str(spec).partition("=")
        if not sep or not left or not right:
            raise ReadError(f"--modality must be NAME=FILE or NAME:KIND=FILE, got {spec!r}")
        name, _, kind = left.partition(":")
        parts = right.split(",")
        if len(parts) not in (1, 3):
            raise ReadError(
                f"--modality {spec!r}: give FILE, or MATRIX,FEATURES,BARCODES for a Matrix Market file"
            )
        if name in names:
            raise ReadError(f"--modality: the name {name!r} is given twice")
        paths.append(parts[0])
        names.append(name)
        if kind:
            kinds[name] = kind
        if len(parts) == 3:
            feats.append(parts[1])
            bcs.append(parts[2])
        elif _is_mtx_path(parts[0]):
            feats.append(None)
            bcs.append(None)
    return paths, names, kinds, feats, bcs


def _is_mtx_path(p) -> bool:
    from .formats import _is_mtx_name

    q = _as_path(p)
    return q.is_file() and _is_mtx_name(q.name)


def read_modalities(data=None, modality=None, **kwargs) -> mudata.MuData:
    """What ``scmm train`` reads: ``DATA`` (comma-separated files) or ``--modality`` values
    (:func:`parse_modality_specs`), exactly one of the two.  Each ``--modality`` FILE must
    hold one modality, named NAME."""
    if bool(data) == bool(modality):
        raise ReadError(
            "give the data either as DATA (comma-separated files) or as --modality NAME=FILE "
            "(repeatable), not both and not neither"
        )
    if data:
        return read(*str(data).split(","), **kwargs)
    paths, names, kinds, feats, bcs = parse_modality_specs(modality)
    if len(paths) < 2:
        raise ReadError("--modality: scMM needs at least 2 modalities (give --modality twice or more)")
    if any(_detect_format(_as_path(p)) in ("h5mu", "10x_h5", "10x_mtx", "geo_mtx") for p in paths):
        bad = [p for p in paths if _detect_format(_as_path(p)) in ("h5mu", "10x_h5", "10x_mtx", "geo_mtx")]
        raise ReadError(
            f"--modality: {bad[0]} may hold several modalities; give one-modality files "
            "(.h5ad, .mtx[.gz], .csv/.tsv[.gz]) with --modality, or pass it as DATA"
        )
    return read(*paths, modality_names=names, kinds=kinds or None,
                features=feats or None, barcodes=bcs or None, **kwargs)


def validate(mdata: mudata.MuData, source: str = "<in memory>", counts_layer: str = "counts",
             kinds=None) -> mudata.MuData:
    """Check and clean an in-memory MuData exactly as :func:`read` does.

    Returns a new MuData (the input is not modified) whose modalities hold
    ``csr_matrix`` float32 raw counts (from ``layers[counts_layer]`` when
    present, else ``X``) on the barcodes shared by all modalities, without
    empty cells and empty features.  ``source`` names the data in messages.
    Modality names are made valid and kinds recorded as by :func:`read`
    (``kinds`` as there).

    Raises
    ------
    ReadError
        Fewer than two modalities, duplicate or no shared barcodes, values that
        are not raw counts, or nothing left after dropping empty cells/features.
    """
    if not isinstance(mdata, mudata.MuData):
        raise ReadError(f"{source}: expected a MuData object, got {type(mdata).__name__}")
    entries = [_Entry(name, ad, None, where=None) for name, ad in mdata.mod.items()]
    if len(entries) < 2:
        raise ReadError(
            f"{source}: found {len(entries)} modality(ies) {[e.name for e in entries]}; "
            "scMM needs at least 2 modalities measured in the same cells"
        )
    names = [e.name for e in entries]
    _finalise_names(entries, kinds, source)
    renamed = {e.name: old for e, old in zip(entries, names) if e.name != old}
    obs, obsm, uns = _global_parts(mdata)
    md = _build(
        entries,
        source=source,
        counts_layer=counts_layer,
        labels={e.name: f"modality '{e.name}'" for e in entries},
        shared_label="all modalities",
        global_obs=obs,
        global_obsm=obsm,
        uns=uns,
        pull_obs=False,
    )
    for e in entries:
        if e.name in renamed:
            e.original = renamed[e.name]
    _record_names(md, entries)
    return md


def read_query(path, modality: str | None = None, counts_layer: str = "counts") -> anndata.AnnData:
    """Read a one-modality query dataset as raw counts.

    Parameters
    ----------
    path
        An ``.h5ad``; a Cell Ranger ``.h5`` or ``.mtx`` folder (with one
        feature type, or pick one with ``modality``: ``rna``, ``prot``,
        ``atac``...); or an ``.h5mu`` from which ``modality`` is taken (may be
        omitted when it holds only one).
    modality
        Modality to take from a multimodal file.
    counts_layer
        Layer holding raw counts; used in preference to ``X`` when present.

    Returns
    -------
    AnnData
        ``X`` is a ``csr_matrix`` of float32 raw counts; cells with zero counts
        are dropped with a warning (features are kept so that they still line
        up with a reference).  ``uns["modality"]`` holds the modality name.

    Raises
    ------
    ReadError
        Missing/unreadable/unknown file, ambiguous or absent modality,
        duplicate barcodes, or values that are not raw counts.
    """
    p = _as_path(path)
    kind = _detect_format(p)
    if kind in ("h5mu", "h5ad", "10x_h5"):
        _check_h5_input(p)
    if kind in ("h5ad", "mtx", "table"):
        if kind == "h5ad":
            ad = _guarded(p, "h5ad", lambda: anndata.read_h5ad(p))
        elif kind == "mtx":
            ad = read_mtx_file(p)
        else:
            ad = read_table(p)
        name = modality or _guess_name(p, ad)
        mods = {name: ad}
        take = name
    else:
        if kind == "h5mu":
            md = _guarded(p, "h5mu", lambda: mudata.read_h5mu(p))
            mods = dict(md.mod)
        elif kind == "geo_mtx":
            mods = {n: a for m in _geo_matrices(p) for n, a, _o in _mtx_modalities(m, None, None, None)}
        else:
            mods = _read_10x(p, kind)
        if not mods:
            raise ReadError(f"{p}: the file holds no modalities")
        if modality is None:
            if len(mods) > 1:
                raise ReadError(
                    f"{p}: the file holds several modalities {list(mods)}; "
                    "pass modality= to choose the query modality"
                )
            take = next(iter(mods))
        else:
            if modality not in mods:
                raise ReadError(
                    f"{p}: modality '{modality}' not found; the file holds {list(mods)}"
                )
            take = modality
    ad = mods[take]
    X, where = _counts_matrix(ad, counts_layer, None, str(p), take)
    _check_barcodes(ad.obs_names, str(p), take)
    out = _new_anndata(ad, X)
    _unique_var(out, str(p), take)
    out.uns["modality"] = take
    empty = np.diff(out.X.indptr) == 0
    if empty.all():
        raise ReadError(f"{p}: all {out.n_obs} cells of modality '{take}' have zero counts")
    if empty.any():
        warnings.warn(
            f"{p}: dropped {int(empty.sum())} of {out.n_obs} cells with zero counts in '{take}'",
            UserWarning,
            stacklevel=2,
        )
        out = out[~empty].copy()
    return out


def summarize(mdata: mudata.MuData) -> dict:
    """Summarise a MuData for display.

    Returns ``{"n_cells": int, "modalities": {name: {"n_features": int,
    "median_counts_per_cell": float, "mean_counts_per_cell": float,
    "sparsity": float}}}`` where sparsity is the fraction of zero entries.
    """
    out = {"n_cells": int(mdata.n_obs), "modalities": {}}
    for name, ad in mdata.mod.items():
        X = ad.X
        n, m = ad.shape
        if X is None or n == 0:
            totals = np.zeros(n)
            nnz = 0
        elif sp.issparse(X):
            totals = np.asarray(X.sum(axis=1)).ravel()
            nnz = X.count_nonzero()
        else:
            arr = np.asarray(X)
            totals = arr.sum(axis=1)
            nnz = int(np.count_nonzero(arr))
        size = n * m
        out["modalities"][name] = {
            "n_features": int(m),
            "median_counts_per_cell": float(np.median(totals)) if n else 0.0,
            "mean_counts_per_cell": float(np.mean(totals)) if n else 0.0,
            "sparsity": float(1.0 - nnz / size) if size else 1.0,
        }
    return out
