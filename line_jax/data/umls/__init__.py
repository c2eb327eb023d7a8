r"""A UMLS release (Rich Release Format) as a LINE dataset folder, without the pairs.

    python -m line_jax.data.umls --meta=META_DIR --out=DATASET_DIR \
        [--sabs=MSH,SNOMEDCT_US] [--languages=ENG] [--max_concepts=0] [--umls.FIELD=...]

Reads from META_DIR (pipe-delimited, no header, streamed in blocks; see `line_jax.data.rrf`):
  MRCONSO.RRF  (required) concept names: one concept per CUI, named by its preferred string
               in `languages` (TS=P, then STT=PF, then ISPREF=Y, then file order); the other
               distinct strings of the CUI become synonym entries `<CUI>#syn<k>` linked to
               it by a `synonym` edge, as the HPO builder does for its synonyms.
  MRREL.RRF    (required) relations, mapped to the seven relation families by
               `config.rel_families` (PAR/CHD -> parent_child with head = child, tail =
               parent; SY -> synonym; RL -> related; RB -> broad; RN -> narrow; RO -> other;
               RQ -> quantifiable). REL codes listed in `config.rel_dropped` (AQ, QB, SIB,
               ...) are dropped and counted; any other code is an error.
  MRSTY.RRF    (optional) the concept's first semantic type becomes its `group`
               (`config.unknown_group` without it).
  MRDEF.RRF    (optional) the first definition of each kept CUI, written to
               definitions.parquet; `line_jax.data.notes` can add them as texts.

Writes into DATASET_DIR: concepts.parquet (concept_id, name, negated_name from
`negation_template`, group, term_id, kind), relations.parquet, heldout_relations.parquet
(`heldout_fraction` of each family in `heldout_relations`, removed from training with any
other edge joining the same pair, plus evaluation-only `sibling` pairs: two children of one
parent), definitions.parquet (when MRDEF.RRF is there) and stats.json (rows read, kept and
dropped by reason). `line_jax.data.notes` then writes pairs.parquet into the same folder.

DATASET_DIR must be missing, empty, or a folder this import wrote before (its
`built_by.json` says so); any other folder (your own dataset, the META folder, a file) is
refused and left as it is. The folder is built beside DATASET_DIR and swapped in whole when
complete (`line_jax.data.atomic.build_aside`): an import that fails, is killed or fills the
disk leaves the previous dataset as it was. A re-import replaces the files above and keeps
the folder's others (pairs.parquet and notes_stats.json of the notes import); when that
pairs.parquet names concept ids the new import lacks, a warning says so (and stats.json
counts them): run the notes import again.

Bad input stops the import with a `DataError` naming the file and the line: an empty (0 byte)
MRCONSO.RRF or MRREL.RRF, a row with the wrong number of fields, an unknown REL code, an
MRREL.RRF none of whose CUIs MRCONSO.RRF holds (rows naming a CUI that MRCONSO.RRF lacks are
otherwise dropped, counted and logged with the first line), and bytes that are not UTF-8
(RRF files are UTF-8: the error names the line, the field and the byte offset). With
`--umls.invalid_utf8=replace` such bytes are read as U+FFFD instead, and the values so read
are counted in stats.json and logged: never silently. An empty MRSTY.RRF or MRDEF.RRF is
read as having no rows (logged).

The package's parts: `concepts` (MRCONSO names and synonym entries, MRSTY groups, MRDEF
definitions), `relations` (MRREL edges), `build` (settings and the build); the command is
`__main__.py`.

Memory: MRCONSO's kept strings, its distinct CUIs and MRREL's kept edges (as integer codes)
are held; each file is read one block at a time.
"""

from line_jax.data.umls.build import build_umls_dataset, umls_settings
from line_jax.data.umls.concepts import (concept_chunks, cui_runs, read_definitions,
                                         read_groups, read_names)
from line_jax.data.umls.relations import FAMILIES, SYMMETRIC, read_relations

__all__ = ["FAMILIES", "SYMMETRIC", "build_umls_dataset", "concept_chunks", "cui_runs",
           "read_definitions", "read_groups", "read_names", "read_relations",
           "umls_settings"]
