"""Model-parallel layouts: the device mesh a job runs on, and declarative plans
(TorchTitan style) that say how each model family is split across it."""
