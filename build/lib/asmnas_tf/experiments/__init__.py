"""The paper's comparative experiments as commands (`bin/experiment`).

- `timing`: one optimisation step of ASM-NAS, DARTS and a plain supernet
  (paper Table 5).
- `stability`: each edge of a trained supernet replaced by its selected op
  (paper §5.3.1, Fig. 3).
- `compare`: ASM-NAS, DARTS and random genotypes searched and trained on the
  same data and budget, several seeds (paper Tables 1-3, Fig. 2).
"""
