r"""Clinical notes -> pairs.parquet of a dataset folder (texts with extracted concept lists).

    python -m line_jax.data.notes --dataset=DATASET_DIR --notes=FILE \
        [--text_column=text --id_column=note_id] [--notes_config.FIELD=...]
    python -m line_jax.data.notes --dataset=DATASET_DIR --pairs=FILE   # another extractor's
                                          # output; format in line_jax.data.notes.pairs_import

FILE is Parquet (.parquet), CSV (.csv, header row) or JSON lines (.jsonl / .json, one object
per line). It is streamed in batches of `batch_size` notes; only the note ids seen so far
are kept (to refuse a repeated id), so a file of millions of notes runs in bounded memory.

Each note is cut into sections at the configured headers (`section_headers`: a header
opens a line and ends with ':'; the paper's discharge and radiology sections by default),
text before the first header is a section of its own (`preamble`), and a note without any
header is one section. A section longer than `max_words` words is cut at sentence ends
into texts of at most `max_words` words (`text_unit="sentence"`: every sentence is a text).
Concepts are extracted with `ConceptExtractor` over the dataset's names and synonyms
(negation included; see `line_jax.data.extract`); rho = words covered by concepts / words.
A text with no concept is dropped and counted. A note's texts all go to one split (a hash
of the note id), so no note straddles splits. The text's `label` is its section.

When the dataset folder has definitions.parquet (written by `line_jax.data.umls` from
MRDEF.RRF) and `include_definitions` is set, the definitions are texts too (label
"definition", split by a hash of the concept id).

Writes DATASET_DIR/pairs.parquet (pair_id, text, concept_ids, negated, rho, split, label,
note_id, section) and notes_stats.json, through a temporary file: pairs.parquet is replaced
only by a complete one. A notes file that gives no pair from its notes (no rows, a header
row alone, only empty notes, no concept found) is an error naming it, and pairs.parquet is
left as it was (the definitions alone are not an import of the notes).

Bad files are errors naming the file, the row or line and what was expected
(`line_jax.data.notes.reader`): a truncated Parquet file, JSON lines named .parquet or
Parquet named .jsonl/.csv, a CSV row with the wrong number of fields, a column missing or
named twice, and bytes that are not UTF-8 (the line and the byte offset).

The package's parts: `settings` (the settings), `sections` (sections, sentences, texts),
`extractor` (the dictionary and `StreamingExtractor`), `tokens` (a note's texts as token
ids), `token_match` (dictionary phrases among token ids), `reader` (notes files), `pairs_file`
(the pairs.parquet schema and writer), `build` (the notes import), `pairs_import` (pairs
from another extractor); the command is `__main__.py`.
"""

from line_jax.data.notes import pairs_import
from line_jax.data.notes.build import DEFINITION, build_pairs
from line_jax.data.notes.extractor import StreamingExtractor, make_extractor
from line_jax.data.notes.pairs_file import PAIR_SCHEMA, PairWriter
from line_jax.data.notes.pairs_import import import_pairs
from line_jax.data.notes.reader import read_notes
from line_jax.data.notes.sections import (DISCHARGE_SECTIONS, PREAMBLE, RADIOLOGY_SECTIONS,
                                          chunk_sentences, header_pattern, note_texts,
                                          split_sections, split_sentences)
from line_jax.data.notes.settings import notes_settings, with_defaults

__all__ = ["DEFINITION", "DISCHARGE_SECTIONS", "PAIR_SCHEMA", "PREAMBLE", "PairWriter",
           "RADIOLOGY_SECTIONS", "StreamingExtractor", "build_pairs", "chunk_sentences",
           "header_pattern", "import_pairs", "make_extractor", "note_texts",
           "notes_settings", "pairs_import", "read_notes", "split_sections", "split_sentences",
           "with_defaults"]
