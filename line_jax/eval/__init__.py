"""Evaluation as in the paper: metrics, the linear probe, plots and the report.

The entry point is `line_jax.evaluate` (CLI and `run_evaluation(model, workdir)`); this
package holds its parts:
  metrics     pure numpy metric functions (ranks, AUC, classification scores, geometry,
              residual recovery), each tested against scikit-learn or by hand;
  classifier  a cross-validated multinomial logistic-regression probe in JAX/optax;
  plots       PNG figures (Agg canvas, no pyplot state);
  report      report.md with the tables laid out as in the paper.
"""
