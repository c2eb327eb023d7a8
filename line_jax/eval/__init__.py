"""Evaluation as in the paper: protocols, embedding spaces, metrics, probe, plots, report.

`runner.run_evaluation(model, workdir)` runs it (the command is `line_jax.evaluate`);
its parts:
  settings    the evaluation's settings, read from config.eval (and recovery, search);
  spaces      how each compared model embeds texts and concepts (teachers, LINE);
  linear      the least-squares map baselines between the teachers (appendix A.4);
  protocols   alignment ranks, relation detection, cross-form classification, residual
              recovery, geometry;
  runner      the whole evaluation (pairs, spaces, every protocol, the files written), and
              one protocol alone;
  retrieval   single concepts in the joint space (retrieval_report: its report section);
  realtext    real annotated sentences kept outside the dataset;
  transfer    a list CNN moved between sites (a package: settings, sites, packing, cnn,
              fitting, protocol, report);
  ner         the token-level NER protocol (a package: bio, features, tagger, protocol);
  metrics     pure numpy metric functions (ranks, AUC, classification scores, geometry,
              residual recovery), each tested against scikit-learn or by hand;
  classifier  a cross-validated multinomial logistic-regression probe in JAX/optax;
  plots       PNG figures (Agg canvas, no pyplot state);
  report      report.md with the tables laid out as in the paper.
"""
