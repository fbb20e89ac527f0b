"""The runtime type checker the tests run every annotated function of successor_lens under
(`--jaxtyping-packages=successor_lens,typecheck.checked` in pyproject.toml, as TransformerLens does
with beartype): jaxtyping checks the shape strings, beartype the rest. An int passes as a float,
as PEP 484 says and mypy checks."""

from beartype import BeartypeConf, beartype

checked = beartype(conf=BeartypeConf(is_pep484_tower=True))
