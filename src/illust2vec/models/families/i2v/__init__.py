"""illustration2vec: the Caffe importer and the Illustration2Vec model."""
