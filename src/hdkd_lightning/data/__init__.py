"""Data layer: sources (root folder -> records), one DataModule, transforms, cache, samplers.

Flow: a *source* (``hdkd_lightning.data.sources``) turns a dataset root into
:class:`~hdkd_lightning.data.base.Record` s plus class names, without decoding images. The
:class:`~hdkd_lightning.data.datamodule.HdkdDataModule` checks the files, removes duplicates on
request, carves the missing splits (stratified, grouped), optionally builds a pre-resized uint8
cache, and serves batches ``{"image", "label", "path"}``.

Nothing heavy is imported here: ``import hdkd_lightning.data`` costs nothing beyond the
package itself; import the submodules you need.
"""
