"""The paper harness: data sets, one-run harness, reproduction, tfmot peer, plots and tables.

Nothing here is part of the library (:mod:`keras_dynhp` never imports it), and
this package imports nothing itself: import the module you need.

- :mod:`keras_dynhp.experiments.datasets`: offline, checksummed MNIST and
  Fashion-MNIST (`keras-dynhp data fetch|info`).
- :mod:`keras_dynhp.experiments.harness`: runs one configuration (SP, HP,
  DynHP, a dense Keras MLP or the tfmot peer) and returns one result record;
  `keras-dynhp train` and the reproduction both go through it.
- :mod:`keras_dynhp.experiments.reproduce`: the paper's grid of
  configurations, resumable (`keras-dynhp reproduce`).
- :mod:`keras_dynhp.experiments.tfmot_peer`: the tfmot magnitude-pruning peer,
  run in a subprocess on `tf_keras`.
- :mod:`keras_dynhp.experiments.report`: plots and tables in the paper's style.
"""
