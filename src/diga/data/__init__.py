"""Data: label tables, file I/O, datasets, transforms and the source/target LightningDataModule."""
