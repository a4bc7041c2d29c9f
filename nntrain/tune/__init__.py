"""Hyperparameter search (`nntrain tune`): a `search:` section in the config, run by optuna.

space.py     the search section's schema, config paths, applying sampled values, checks
study.py     optuna storage, study, sampler, pruner; trial bookkeeping for many workers
trials.py    one trial as an ordinary `nntrain fit` run, and the pruning callback
report.py    leaderboard (table and CSV), best.yaml, the plot, TensorBoard HPARAMS
command.py   the `tune` command: check, open the study, run workers, report

Nothing here imports optuna, JAX or matplotlib at module level except study.py and trials.py,
which only `nntrain tune` imports: the config schema imports space.py.
"""
