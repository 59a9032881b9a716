"""The pipeline, in data-flow order: readers -> runner -> writers, run here or on Ray.

* :mod:`~illust2vec.pipeline.readers`: files, folders, lists, URIs, face crops;
* :mod:`~illust2vec.pipeline.runner`: the models over one decode per picture (the decode pool);
* :mod:`~illust2vec.pipeline.writers`: records, matrices, captions, statistics;
* :mod:`~illust2vec.pipeline.distribute`: where the runner runs (:class:`Local` or :class:`OnRay`);
* :mod:`~illust2vec.pipeline.tasks`: the commands as calls (:func:`tag_files`, :func:`embed_files`,
  :func:`index_files`), the collection being the writer of the last.
"""
