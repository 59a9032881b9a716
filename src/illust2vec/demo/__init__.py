"""The drawn demo gallery used by the README and `illust2vec demo`."""
