"""The model layer: every checkpoint family mm runs loads here, through one sequence.

:func:`mm.models.loading.load_model` is that sequence: resolve the model (a local folder, the HF
cache or the hub; files are then read with ``local_files_only``) -> load the weights in the resolved
dtype -> quantize (``int8``) -> the engine (mm's fast decode loop, built on first use over the final
weights). Loaded models are shared per (family, path, device, dtype, quantize).

=============  ==========================================  ==============================
family         loader                                      returns
=============  ==========================================  ==============================
LFM2           :func:`mm.models.lfm2.load_lfm2`            :class:`mm.backbone.Backbone`
LFM2-VL        :func:`mm.models.lfm2_vl.load_lfm2_vl`      ``VisionLanguageModel``
LFM2-Audio     :meth:`mm.models.lfm2_audio.LFM2Audio.load` ``LFM2Audio``
LFM2-ColBERT   :func:`mm.models.colbert.load_colbert`      ``ColBERTEncoder``
=============  ==========================================  ==============================

Layers: ``pipelines/`` orchestrate (inputs -> model -> results), ``mm.models`` loads and owns the
models, ``encoders/`` hold the modality encoders the models are built from (vision preprocessing,
audio in/out, Mimi, text encoders).

>>> import tempfile, mm.testing
>>> from mm.models.lfm2 import load_lfm2
>>> path = mm.testing.make_tiny_lfm2(tempfile.mkdtemp())
>>> load_lfm2(path, dtype="float32") is load_lfm2(path, dtype="float32")
True
"""
