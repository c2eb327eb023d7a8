r"""Transfer of a CNN over lists of concept embeddings between two sites.

A downstream protocol for concept embeddings: each case (a pair of the dataset) is the
*list* of its concepts; a small CNN classifies the pair's `label` from that list, and is
moved from one site (source of the data) to another under three strategies.

The classifier (`ListCNN`): a 1-D convolution with `filters` (100) filters of width 1 over
the padded list of concept embeddings, ReLU, max pooling over the list (padding masked
out), and a fully connected layer to the classes. A negated occurrence is its own entry
(the negated form's embedding; with one-hot inputs its own id). With one-hot inputs the
width-1 convolution is a row lookup of its kernel (`kernel[id] + bias`), which is the same
function without building the one-hot vectors.

The protocol (`run_transfer`), for each direction A -> B of the two sites and each
embedding:
  * train on site A (a `validation_fraction` of A held out for early stopping on the
    validation loss, with `patience` epochs);
  * draw a labelled `target_fraction` of site B (stratified by label; a `validation_fraction`
    of it held out for early stopping), the rest of B is the test part;
  * direct: the A model on B's test part; linear: the A model with only the fully connected
    layer tuned on B's labelled part; full: every layer tuned; target only: the same CNN
    trained from scratch on B's labelled part alone (the reference that tells whether A
    helped at all);
  * `num_seeds` seeds, each with its own initialisation, validation parts and target
    sample; macro F1 and accuracy as mean and standard deviation over seeds.
All seeds train at once: the parameters carry a leading seed axis and the jitted step is
`vmap`ped over it. Training batches are packed (`pack_batches`): a batch's list entries sit
back to back in a buffer of fixed capacity, so the convolution runs on real entries only,
not on the padding of short lists (the same function, `packed_logits`; scoring uses the
padded `ListCNN`). Shapes are static (rows of weight 0 pad a batch, the capacity is fixed
per training set) and the learning rate is an argument, so that few compilations serve
every epoch, seed, direction and learning rate.

Sites: the pairs' `site` column, else `source` (config `site_column`); `site_pattern`, a
regular expression with one group, maps the column's values to sites (e.g. the database
prefix of a disease id); `sites` names the two compared (default: the two largest).

Too few examples: a compared site with fewer than `min_site_pairs` labelled pairs skips the
protocol; a label class with fewer than `min_class_pairs` pairs at either site is left out
(with a note), and fewer than two classes left skip it (one class leaves nothing to learn,
every F1 1.0; classes of one site only can be learnt at neither). A skip returns
{"skipped": why}, which the report prints. An embedder's rows of another shape, or with a
NaN or inf, raise ValueError naming the embedding and the first bad concept.

When the label is one of the concepts' `group`s (the top-level branch of each concept, as
in the HPO data, where the label is the most frequent branch among the findings), the
protocol also runs with the branch-root concepts (those named as their group, and every
entry of the same term) removed from the lists, so that a list cannot name its label.

Modules: `settings` (config.eval.transfer and the names the parts share), `sites` (sites,
labels, branch roots, too few examples), `packing` (padded and packed lists), `cnn` (the
classifier and its forward functions), `fitting` (training with early stopping, all seeds at
once), `protocol` (`run_transfer`, one direction), `report` (the plot and report section).
"""
