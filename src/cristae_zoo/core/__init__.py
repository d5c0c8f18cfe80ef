"""The machinery every system shares: the `System` interface and registry, the tensor description (the contract
between a system, the packager and the predictor), the one trainer and the one model-folder loader."""
