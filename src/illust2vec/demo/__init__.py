"""The drawn demo gallery used by the documentation and `illust2vec demo`."""
