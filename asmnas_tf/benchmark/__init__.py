"""A ground-truth benchmark of a small cell space on Fashion-MNIST (SPEC §11).

`space`: the benchmark's cell space and its architectures; `recipe`: the one
fixed training every architecture gets; `train_one`: that training;
`table`: the data file and its reader; `scoring`: a search's pick against it.
"""
