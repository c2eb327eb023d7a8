r"""The paper's token-level NER protocol (section 3.3.2, Table 3) on CoNLL/BIO files.

    python -m line_jax.evaluate --workdir=RUN --ner=FILE_OR_DIR

For teacher 1, teacher 2 and LINE (F applied to each of teacher 1's token states), every
word of every sentence gets the model's embedding of its first sub-word token (the last
layer's state, L2-normalised when the teacher normalises its pooled output); a linear
token classifier (softmax over the BIO tags) is trained on the training split with Adam
for `config.eval.ner.epochs` epochs, once per seed of `config.eval.ner.seeds`, and scored
on the validation and test splits: entity-level micro F1 (over all entities) and macro F1
(mean over entity types), as the paper reports them (mean over the seeds). The encoders
stay frozen (features are computed once); only the linear layer is trained. A teacher of
kind 'finetuned' gives the token states of its saved folder (`token_teacher_config`); a
teacher of another kind than 'hf' or 'finetuned' is refused before any work.

Input (CoNLL / BIO): one token per line, the token in the first column and the tag (O,
B-TYPE, I-TYPE) in the last, a blank line between sentences, `-DOCSTART-` lines ignored.
FILE_OR_DIR is a folder with train*, dev* or valid*, and test* files, or one file whose
sentences are split `config.eval.ner.split_fractions` by a hash of the sentence. An I- tag
that does not continue an entity of its type, a malformed line, and a tag of the
validation or test split that the training split lacks are errors naming file and line.

`write_bio_from_dataset` makes such files from a dataset's texts by running the dictionary
extractor (entity type = the concept's group); the default HPO dataset's vignettes give a
SYNTHETIC NER set this way (the builder does not store mention spans):

    python -m line_jax.eval.ner --bio_dataset=DATASET_DIR --bio_out=DIR

(that command is `line_jax/eval/ner/__main__.py`; the settings are config.eval.ner, whose
defaults are in line_jax/config.py).

Outputs in RUN/ner/: metrics.json, report.md and f1.png.

Modules: `bio` (BIO files: reading, splitting, entities and F1, and writing them from a
dataset), `features` (a teacher's per-word token states), `tagger` (the linear token
classifier and its scores over seeds), `protocol` (`run_ner`, its report and plot).
"""
